import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.js';
import './styles.css';
import { pickBridge } from './transport/pick.js';

const root = document.getElementById('root');
if (!root) throw new Error('renderer: index.html has no #root element');
createRoot(root).render(
  <StrictMode>
    <App bridge={pickBridge(window)} />
  </StrictMode>,
);
