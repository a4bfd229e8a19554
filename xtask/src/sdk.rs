//! Build and test steps of the sdk tier: the wasm core (sdk-wasm/) and the npm package (npm/).
//!
//! `build`: cargo (wasm32, `wasm-release` profile) -> wasm-bindgen `--target web` into npm/wasm/
//! -> wasm-opt -Oz -> short import/export names and a compact loading function in the glue ->
//! esbuild bundles the loader (npm/src/index.js) with the glue, minified, into npm/dist/index.js
//! (the package's entry point), the script-tag build npm/dist/nexus.js (src/global.js) and the
//! stub snippet npm/dist/stub.min.js; then the size budget, measured as the issue defines it: an
//! app calling `init`, `track`, `page`, `identify` and `flush` (npm/test/size/app.js) bundled by
//! esbuild `--minify` as an app would bundle it, plus the wasm, gzip -9, with a per-file
//! breakdown.
//! `test`: native unit tests, wasm-bindgen-test in headless Chromium, then the Playwright tests
//! of the npm package against the freshly built wasm, the packaging test included (the packed
//! package in a Vite app and a plain module page, its types through `tsc`).
//! `bench`: the main-thread cost of `track()` against posthog-js (npm/bench/bench.mjs).
//!
//! Cargo is run directly: the caller holds the workspace's cargo lock around the whole xtask
//! (`flock /tmp/nexus-cargo.lock cargo xtask ...`), and taking it again here would deadlock.

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::{stage, Ctx};

/// What cargo builds for the browser.
const CARGO_WASM: &str = "target/wasm32-unknown-unknown/wasm-release/nexus_sdk.wasm";
/// Where wasm-bindgen writes the glue and the wasm the npm loader imports.
const OUT_DIR: &str = "npm/wasm";
/// The optimised module, in place of wasm-bindgen's.
const OUT_WASM: &str = "npm/wasm/nexus_sdk_bg.wasm";
/// The wasm-bindgen JS glue.
const OUT_GLUE: &str = "npm/wasm/nexus_sdk.js";
/// The hand-written loader.
const LOADER: &str = "npm/src/index.js";
/// Loader + glue bundled and minified: the package's entry point.
const BUNDLE: &str = "npm/dist/index.js";
/// Entry of the script-tag build that the stub snippet loads.
const GLOBAL_ENTRY: &str = "npm/src/global.js";
/// The script-tag build: the whole API on `window.nexus`, replaying the stub's calls.
const GLOBAL_BUNDLE: &str = "npm/dist/nexus.js";
/// The queue-before-load snippet, as written.
const STUB: &str = "npm/src/stub.js";
/// The snippet minified, to paste in an inline `<script>`.
const STUB_MIN: &str = "npm/dist/stub.min.js";
/// The app the budget is measured with.
const SIZE_APP: &str = "npm/test/size/app.js";
/// That app bundled (outside npm/: not part of the package).
const SIZE_APP_BUNDLE: &str = "target/sdk-size/app.js";
/// The wasm-bindgen CLI must equal the `wasm-bindgen` crate (pinned in Cargo.toml), or it tries
/// to download a matching one.
const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// The features rustc enables by default for wasm32-unknown-unknown; wasm-opt must accept them
/// and must not add others (`--all-features` would also write a 400-byte features section).
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-sign-ext",
];
/// wasm-opt passes and facts it may assume (together about 150 B gzipped off plain -Oz).
const WASM_OPT_FLAGS: [&str; 7] = [
    "-Oz",
    // Repeats the passes while they still shrink the module.
    "--converge",
    // Rust's wasm32 layout puts the stack first, from address 0 up to 1 MiB, and data after it:
    // the first 1 KiB is never a static address, so constant offsets can fold into loads.
    "--low-memory-unused",
    // The module defines its memory (not imported), so it starts zeroed: zero-filled data
    // segments can go.
    "--zero-filled-memory",
    "--strip-debug",
    "--strip-producers",
    "--strip-target-features",
];
/// Gzipped budget of everything a page downloads: wasm + bundled loader and glue (the SDK has
/// 20 KiB, see the `wasm-release` profile in Cargo.toml).
const BUDGET_BYTES: usize = 20 * 1024;

/// Builds the wasm and the npm package's `wasm/` folder; prints the gzipped sizes.
pub fn build(ctx: &Ctx) -> Result<()> {
    let mut times = Vec::new();
    build_stages(ctx, &mut times)?;
    print_times(&times);
    Ok(())
}

fn build_stages(ctx: &Ctx, times: &mut Vec<(String, std::time::Duration)>) -> Result<()> {
    let sh = &ctx.sh;
    stage(times, "sdk: cargo build (wasm32, wasm-release)", || {
        cmd!(sh, "cargo build -p nexus-sdk --target wasm32-unknown-unknown --profile wasm-release").run()?;
        Ok(())
    })?;
    stage(times, "sdk: wasm-bindgen", || {
        let version = cmd!(sh, "wasm-bindgen --version").read().context("wasm-bindgen-cli is not installed")?;
        if !version.contains(WASM_BINDGEN_VERSION) {
            bail!("need wasm-bindgen-cli {WASM_BINDGEN_VERSION}, found `{version}`: cargo install wasm-bindgen-cli --version {WASM_BINDGEN_VERSION}");
        }
        cmd!(sh, "wasm-bindgen --target web --out-dir {OUT_DIR} --out-name nexus_sdk {CARGO_WASM}").run()?;
        Ok(())
    })?;
    stage(times, "sdk: wasm-opt -Oz", || {
        let wasm_opt = ctx.node_bin("wasm-opt");
        if !wasm_opt.exists() {
            bail!("{} is missing: run `npm ci` at the workspace root", wasm_opt.display());
        }
        cmd!(sh, "{wasm_opt} {WASM_FEATURES...} {WASM_OPT_FLAGS...} -o {OUT_WASM} {OUT_WASM}").run()?;
        Ok(())
    })?;
    stage(times, "sdk: short import and export names", || minify_names(ctx))?;
    stage(times, "sdk: compact glue loader", || compact_loader(ctx))?;
    stage(times, "sdk: drop glue fallbacks", || drop_fallbacks(ctx))?;
    stage(times, "sdk: esbuild bundle", || {
        check_version(sh)?;
        let esbuild = ctx.node_bin("esbuild");
        // The wasm stays a separate file, found by `new URL('../wasm/…', import.meta.url)`,
        // which esbuild keeps and bundlers of the package's users understand.
        let common = [
            "--format=esm",
            "--platform=browser",
            "--target=es2020",
            "--minify",
            "--legal-comments=none",
            "--log-level=warning",
        ];
        cmd!(sh, "{esbuild} {LOADER} --bundle {common...} --outfile={BUNDLE}").run()?;
        cmd!(sh, "{esbuild} {GLOBAL_ENTRY} --bundle {common...} --outfile={GLOBAL_BUNDLE}").run()?;
        // Not bundled and not ESM: pasted into an inline classic <script> as it is.
        cmd!(
            sh,
            "{esbuild} {STUB} --minify --target=es5 --legal-comments=none --log-level=warning --outfile={STUB_MIN}"
        )
        .run()?;
        // The measured app, bundled from the package's entry point as a user's bundler would.
        cmd!(sh, "{esbuild} {SIZE_APP} --bundle {common...} --outfile={SIZE_APP_BUNDLE}").run()?;
        Ok(())
    })?;
    report_size(sh)
}

/// Fails unless the version the loader sends as `context.library.version` is the package's.
fn check_version(sh: &Shell) -> Result<()> {
    let package = sh.read_file("npm/package.json")?;
    let version = package
        .split("\"version\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .context("npm/package.json has no version")?;
    let constant = format!("const VERSION = '{version}';");
    if !sh.read_file(LOADER)?.contains(&constant) {
        bail!("{LOADER} must say `{constant}` (the version in npm/package.json)");
    }
    Ok(())
}

/// Renames the wasm's imports, exports and import module to one or two letters, and the glue
/// to match.
///
/// wasm-bindgen names each import `__wbg_<name>_<16 hex digits of hash>`, and both the wasm and
/// the glue spell every name out: about 900 B gzipped of the budget for names nobody reads (the
/// hashes do not compress). wasm-opt's `--minify-imports-and-exports-and-modules` renames them in
/// the wasm and prints the mapping; the glue is rewritten from it here: the keys of its imports
/// object, its import module name and every `wasm.<export>` it calls. Anything it cannot map
/// fails the build rather than ship a glue that does not fit the wasm.
fn minify_names(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let wasm_opt = ctx.node_bin("wasm-opt");
    let map =
        cmd!(sh, "{wasm_opt} {WASM_FEATURES...} --minify-imports-and-exports-and-modules -o {OUT_WASM} {OUT_WASM}")
            .read()?;
    // Lines `["module", "old", "new"],` (imports) and `["old", "new"],` (exports).
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    for line in map.lines() {
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        match quoted.as_slice() {
            [module, old, new] => imports.push((*module, *old, *new)),
            [old, new] => exports.push((*old, *new)),
            _ => {}
        }
    }
    if imports.is_empty() || exports.is_empty() {
        bail!("wasm-opt printed no name mapping: {map}");
    }
    let mut glue = sh.read_file(OUT_GLUE)?;
    // All imports come from the one glue module, which wasm-opt renames to `a`.
    let module = "\"./nexus_sdk_bg.js\": import0";
    if imports.iter().any(|(m, _, _)| *m != "./nexus_sdk_bg.js") || glue.matches(module).count() != 1 {
        bail!("unexpected import modules in the wasm-bindgen output");
    }
    glue = glue.replace(module, "a: import0");
    for (_, old, new) in &imports {
        let key = format!("        {old}: function");
        if glue.matches(&key).count() != 1 {
            bail!("import {old} is not in the glue's imports object");
        }
        glue = glue.replace(&key, &format!("        {new}: function"));
    }
    // `wasm.<export>`, matched as a whole identifier (`__wbindgen_export` vs `…export2`).
    let mut out = String::with_capacity(glue.len());
    let mut rest = glue.as_str();
    while let Some(at) = rest.find("wasm.") {
        let (before, after) = rest.split_at(at + 5);
        out.push_str(before);
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')).unwrap_or(after.len());
        let (name, tail) = after.split_at(end);
        match exports.iter().find(|(old, _)| *old == name) {
            Some((_, new)) => out.push_str(new),
            None => bail!("the glue calls wasm.{name}, which the wasm does not export"),
        }
        rest = tail;
    }
    out.push_str(rest);
    // The module name must be what the glue now says.
    let check = format!(
        "const m = new WebAssembly.Module(require('fs').readFileSync('{OUT_WASM}')); \
         if (WebAssembly.Module.imports(m).some((i) => i.module !== 'a')) process.exit(1)"
    );
    cmd!(sh, "node -e {check}").run().context("the minified wasm imports from a module other than `a`")?;
    sh.write_file(OUT_GLUE, out)?;
    Ok(())
}

/// The start of the glue's loading code, replaced by [`compact_loader`].
const GLUE_LOAD: &str = "async function __wbg_load(";
/// What replaces it: one `instantiateStreaming` of the URL the loader passes.
///
/// wasm-bindgen's version accepts bytes, a `Response`, a `Request`, a string or an options
/// object, warns about deprecated parameters and falls back to `WebAssembly.instantiate` when a
/// server sends the wrong MIME type: about 490 B gzipped of the bundle for cases the loader
/// never has (it always passes a `URL`, and the README requires `application/wasm`). A failed
/// fetch, a wrong type or a CSP without `wasm-unsafe-eval` all reject here, as before, and the
/// loader reports it once.
const COMPACT_LOAD: &str = "async function __wbg_init(url) {
    if (wasm !== undefined) return wasm;
    const { instance, module } = await WebAssembly.instantiateStreaming(fetch(url), __wbg_get_imports());
    return __wbg_finalize_init(instance, module);
}

export { __wbg_init as default };
";

/// Replaces the glue's loading code from [`GLUE_LOAD`] to its end with [`COMPACT_LOAD`], after
/// checking it is the code this was written against (the same names, in that order).
fn compact_loader(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let glue = sh.read_file(OUT_GLUE)?;
    let Some(at) = glue.find(GLUE_LOAD) else { bail!("the glue has no `{GLUE_LOAD}`") };
    let tail = &glue[at..];
    let expected = [
        "async function __wbg_load(",
        "function initSync(",
        "async function __wbg_init(",
        "async function __wbg_init_once(",
        "export { initSync, __wbg_init as default };",
    ];
    let mut from = 0;
    for part in expected {
        match tail[from..].find(part) {
            Some(i) => from += i + part.len(),
            None => bail!("the glue's loading code changed (no `{part}` where expected): update COMPACT_LOAD"),
        }
    }
    if !tail[from..].trim().is_empty() || glue.matches("function __wbg_finalize_init(").count() != 1 {
        bail!("the glue's loading code changed: update COMPACT_LOAD");
    }
    sh.write_file(OUT_GLUE, format!("{}{COMPACT_LOAD}", &glue[..at]))?;
    Ok(())
}

/// Code of the wasm-bindgen glue for cases the SDK never meets, and what replaces it.
///
/// - `TextEncoder.encodeInto` is polyfilled for browsers without it (before Chrome 74, Firefox
///   66, Safari 14.1), none of which can compile the wasm (reference types: Chrome 96, Firefox
///   79, Safari 15).
/// - `passStringToWasm0` has a branch for a missing `realloc`, but the glue passes one at every
///   call (checked below).
///
/// - The `TextDecoder` is replaced after 2 GiB decoded, for a Safari limit; this SDK decodes
///   only short strings (storage values, batch bodies of at most 512 KiB), so a page would
///   have to send over 4,000 full batches to get there.
///
/// About 130 B gzipped of the budget; each must match exactly once, or the build fails.
const GLUE_FALLBACKS: [(&str, &str); 3] = [
    (
        "const MAX_SAFARI_DECODE_BYTES = 2146435072;
let numBytesDecoded = 0;
function decodeText(bytes) {
    numBytesDecoded += bytes.length;
    if (numBytesDecoded >= MAX_SAFARI_DECODE_BYTES) {
        cachedTextDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
        cachedTextDecoder.decode();
        numBytesDecoded = bytes.length;
    }
    return cachedTextDecoder.decode(bytes);
}",
        "function decodeText(bytes) {
    return cachedTextDecoder.decode(bytes);
}",
    ),
    (
        "if (!('encodeInto' in cachedTextEncoder)) {
    cachedTextEncoder.encodeInto = function (arg, view) {
        const buf = cachedTextEncoder.encode(arg);
        view.set(buf);
        return {
            read: arg.length,
            written: buf.length
        };
    };
}
",
        "",
    ),
    (
        "    if (realloc === undefined) {
        const buf = cachedTextEncoder.encode(arg);
        const ptr = malloc(buf.length, 1) >>> 0;
        getUint8ArrayMemory0().subarray(ptr, ptr + buf.length).set(buf);
        WASM_VECTOR_LEN = buf.length;
        return ptr;
    }
",
        "",
    ),
];

/// Removes [`GLUE_FALLBACKS`] from the glue.
fn drop_fallbacks(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let mut glue = sh.read_file(OUT_GLUE)?;
    for (code, with) in GLUE_FALLBACKS {
        if glue.matches(code).count() != 1 {
            bail!(
                "the glue changed: no single `{}` to drop (update GLUE_FALLBACKS)",
                code.lines().next().unwrap_or("")
            );
        }
        glue = glue.replace(code, with);
    }
    // Every call passes `realloc` (three arguments), the premise of dropping the branch above.
    let calls: Vec<&str> = glue.split("passStringToWasm0(").skip(1).collect();
    let three = |args: &&str| args.split(')').next().is_some_and(|a| a.matches(',').count() == 2);
    if calls.is_empty() || !calls.iter().all(three) {
        bail!("passStringToWasm0 is called without realloc: keep its fallback");
    }
    sh.write_file(OUT_GLUE, glue)?;
    Ok(())
}

/// gzip -9 size of a file, as a page would download it from a server that compresses.
fn gzipped(sh: &Shell, file: &str) -> Result<usize> {
    let out = cmd!(sh, "gzip -9 -c {file}").output().with_context(|| format!("gzip {file}"))?;
    Ok(out.stdout.len())
}

fn report_size(sh: &Shell) -> Result<()> {
    // (what, file, counted in the app budget, counted in the script-tag total)
    let files = [
        ("wasm", OUT_WASM, true, true),
        ("app bundle (min.)", SIZE_APP_BUNDLE, true, false),
        ("stub snippet (min.)", STUB_MIN, false, true),
        ("script build (min.)", GLOBAL_BUNDLE, false, true),
        ("package entry (min.)", BUNDLE, false, false),
        ("wasm-bindgen glue", OUT_GLUE, false, false),
        ("loader source", LOADER, false, false),
    ];
    let (mut app, mut script) = (0, 0);
    eprintln!("sdk size (gzip -9):");
    for (what, file, in_app, in_script) in files {
        let raw = std::fs::metadata(sh.current_dir().join(file)).with_context(|| format!("{file} is missing"))?.len();
        let gz = gzipped(sh, file)?;
        eprintln!("  {what:<21} {raw:>7} B raw {gz:>7} B gz  {file}");
        app += if in_app { gz } else { 0 };
        script += if in_script { gz } else { 0 };
    }
    eprintln!("  app (init/track/page/identify/flush) + wasm: {app:>6} B gz  (budget {BUDGET_BYTES} B)");
    eprintln!("  stub + script build (whole API) + wasm:      {script:>6} B gz");
    if app > BUDGET_BYTES {
        bail!("the SDK is over its size budget: {app} B gzipped, the budget is {BUDGET_BYTES} B");
    }
    Ok(())
}

/// Runs the SDK's tests: native unit tests, wasm-bindgen-test in headless Chromium, and the
/// Playwright tests of the npm package (which need a fresh build, made here).
pub fn test(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let mut times = Vec::new();
    stage(&mut times, "sdk: native unit tests", || {
        cmd!(sh, "cargo test -p nexus-sdk").run()?;
        Ok(())
    })?;
    stage(&mut times, "sdk: wasm-bindgen-test (headless Chromium)", || {
        // The runner picks the driver from CHROMEDRIVER; flags and the binary are in
        // sdk-wasm/webdriver.json.
        let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        if !Path::new(&driver).exists() {
            bail!("{driver} is missing: apt-get install chromium chromium-driver");
        }
        cmd!(sh, "cargo test -p nexus-sdk --target wasm32-unknown-unknown").env("CHROMEDRIVER", driver).run()?;
        Ok(())
    })?;
    build_stages(ctx, &mut times)?;
    stage(&mut times, "sdk: npm/ devDependencies (vite, typescript)", || {
        // The packaging test builds an app with Vite and checks the types with tsc, both from
        // npm/'s own devDependencies (the package's, not the workspace's tooling).
        let bins = ["vite", "tsc"].map(|b| ctx.root.join("npm/node_modules/.bin").join(b));
        if !bins.iter().all(|b| b.exists()) {
            cmd!(sh, "npm ci --prefix npm --no-audit --no-fund").run()?;
        }
        Ok(())
    })?;
    stage(&mut times, "sdk: Playwright (npm package in headless Chromium)", || {
        let mut files: Vec<String> = std::fs::read_dir(ctx.root.join("npm/test"))?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".test.mjs"))
            .map(|name| format!("npm/test/{name}"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no npm/test/*.test.mjs found");
        }
        cmd!(sh, "node --test {files...}").run()?;
        Ok(())
    })?;
    print_times(&times);
    Ok(())
}

/// The baseline of `bench`, from npm, pinned so that runs compare.
const POSTHOG_JS: &str = "posthog-js@1.449.2";
/// Where `bench` installs it (outside the workspace's own node_modules: a benchmark's baseline
/// is not a dependency of the project).
const BENCH_DIR: &str = "target/bench-sdk";

/// `cargo xtask bench-sdk`: builds the SDK, installs posthog-js from npm once, and runs
/// npm/bench/bench.mjs, which measures both in one headless Chromium and prints a table.
pub fn bench(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let mut times = Vec::new();
    build_stages(ctx, &mut times)?;
    if !ctx.root.join(BENCH_DIR).join("node_modules/posthog-js/dist/array.js").exists() {
        cmd!(sh, "npm install --no-save --no-audit --no-fund --prefix {BENCH_DIR} {POSTHOG_JS}").run()?;
    }
    cmd!(sh, "node npm/bench/bench.mjs {BENCH_DIR}").run()?;
    Ok(())
}

fn print_times(times: &[(String, std::time::Duration)]) {
    eprintln!("sdk stages:");
    for (name, took) in times {
        eprintln!("  {:>6.1}s  {name}", took.as_secs_f64());
    }
}
