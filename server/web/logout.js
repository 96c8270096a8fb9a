// comfyui-auth: adds a Logout button to ComfyUI's menu. The gateway appends
// this script's URL to the list /extensions returns, so the ComfyUI frontend
// imports it like any extension. It imports nothing from ComfyUI, so it works
// with the old menu, the new one, or neither (then the button floats in a
// corner).
const ID = 'comfyui-auth-logout';

function makeButton() {
  const b = document.createElement('button');
  b.id = ID;
  b.type = 'button';
  b.textContent = 'Logout';
  b.title = 'End this browser session';
  b.addEventListener('click', () => {
    window.location.href = '/logout';
  });
  return b;
}

function place() {
  if (document.getElementById(ID)) {
    return true;
  }
  const menu = document.querySelector('.comfyui-menu-right, .comfy-menu, #comfy-menu, .comfyui-menu');
  if (!menu) {
    return false;
  }
  menu.appendChild(makeButton());
  return true;
}

function floating() {
  if (document.getElementById(ID)) {
    return;
  }
  const b = makeButton();
  Object.assign(b.style, { position: 'fixed', right: '8px', bottom: '8px', zIndex: '10000' });
  document.body.appendChild(b);
}

if (!place()) {
  // The menu may be built after extensions load: watch for it a while.
  const obs = new MutationObserver(() => {
    if (place()) {
      obs.disconnect();
    }
  });
  obs.observe(document.body, { childList: true, subtree: true });
  setTimeout(() => {
    obs.disconnect();
    floating();
  }, 10000);
}
