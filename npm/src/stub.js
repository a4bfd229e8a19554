// The queue-before-load snippet: paste it, minified (dist/stub.min.js, a few hundred bytes), in
// an inline <script> with the URL of dist/nexus.js in place of '/dist/nexus.js'.
//
// It defines `window.nexus` at once, so page code can call `nexus.track(...)` from its first
// line; each call is recorded with its time, and returns a Promise like the real function. It
// then loads dist/nexus.js (src/global.js), which replays the calls in order, with their times,
// and replaces the stub's functions with the real ones. If the script cannot load (blocked,
// offline, refused by a CSP), the stub says so once and every call resolves doing nothing:
// page code never throws because of analytics.
//
// Plain ES5 in a function expression: it runs as written in every browser and leaks no names.
(function (w, d, src) {
  var n = w.nexus;
  if (n && (n.q || n.track)) return; // pasted twice, or the SDK is already there
  n = w.nexus = { q: [] };
  'init track page identify alias group register unregister reset optIn optOut flush'.split(' ').forEach(function (m) {
    n[m] = function () {
      var a = [].slice.call(arguments);
      var t = Date.now();
      return new Promise(function (r) {
        // Bounded: a page whose SDK never arrives must not grow without end.
        n.q.length < 1000 ? n.q.push([m, a, t, r]) : r();
      });
    };
  });
  var s = d.createElement('script');
  s.type = 'module';
  s.src = src;
  s.onerror = function () {
    console.warn('nexus: the SDK could not be loaded; nothing is recorded');
    n.q.forEach(function (c) {
      c[3]();
    });
    // Later calls resolve at once.
    n.q = { length: 0, push: function (c) { c[3](); } };
  };
  d.head.appendChild(s);
})(window, document, '/dist/nexus.js');
