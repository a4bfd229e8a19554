// Entry of dist/nexus.js, the script the stub snippet (src/stub.js) loads: puts the SDK's
// functions on `window.nexus` in place of the stub's, and replays the calls the stub recorded,
// in order and with the time each was made. Page code that kept a reference to the stub object
// keeps working: its functions are replaced on that same object.

import * as sdk from './index.js';

const nexus = window.nexus && typeof window.nexus === 'object' ? window.nexus : {};
const calls = Array.isArray(nexus.q) ? nexus.q : [];
for (const name of Object.keys(sdk)) if (name !== 'replayAt') nexus[name] = sdk[name];
// Here autocapture is also an init option: a page with the snippet has no import to add.
nexus.init = (options) => {
  if (options?.outboundLinks) sdk.captureOutboundLinks();
  if (options?.webVitals) sdk.captureWebVitals();
  return sdk.init(options);
};
delete nexus.q;
window.nexus = nexus;

for (const [name, args, at, resolve] of calls) {
  try {
    Promise.resolve(sdk.replayAt(at, () => nexus[name](...args))).then(resolve, (error) => {
      console.error(error);
      resolve();
    });
  } catch (error) {
    console.error(error);
    resolve();
  }
}
