// An extension module, loaded by app.js through import() of a URL that
// /api/extensions lists, as ComfyUI's frontend loads custom-node scripts.
// It adds a button to #comfy-menu and marks the page.

const menu = document.getElementById('comfy-menu');
if (menu) {
  const button = document.createElement('button');
  button.id = 'example-extension-button';
  button.textContent = 'Example extension';
  menu.appendChild(button);
}
document.body.dataset.extensionLoaded = 'example';

export const name = 'example';
