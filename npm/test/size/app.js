// The app the size budget is measured with (`cargo xtask build-sdk`): it calls what the issue
// names, through the package's entry point, and is bundled by esbuild --minify as an app would
// bundle it, so whatever the app does not call is left out, as it would be in a real app.
import { flush, identify, init, page, track } from '../../dist/index.js';

init({ key: 'wk_size', endpoint: 'https://collect.example.com' });
page();
track('signup_clicked', { plan: 'pro' });
identify('user-1', { email: 'a@example.com' });
flush();
