//! Builds the web page (`web/`, TypeScript + Vite) when Node.js and npm are present and embeds
//! its files in the binary: `$OUT_DIR/ui_assets.rs` holds `UI_ASSETS` (path, bytes) and
//! `UI_MISSING` (why there are none, for the page that `/` serves instead).
//!
//! The build is cached by content: the page's sources are hashed and built once into
//! `web/dist/<hash>/` (git-ignored), which every cargo profile (dev, test, release, clippy)
//! then embeds; `npm ci` runs only when `package-lock.json` changed. A lock directory keeps two
//! build scripts (clippy's and the build's, run at once) from building together.
//! `WICK_SKIP_WEB_BUILD=1` never runs npm (a dist already built is still embedded).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The page's sources: what the hash covers and what cargo watches.
const SOURCES: &[&str] = &[
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

const BUILD_COMMAND: &str = "cd web && npm ci && npm run build";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let web = root.join("web");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WICK_SKIP_WEB_BUILD");
    for s in SOURCES {
        println!("cargo:rerun-if-changed=web/{s}");
    }
    let (files, missing) = match page(&web) {
        Ok(dist) => (list_files(&dist), String::new()),
        Err(why) => {
            println!("cargo:warning=the web page is not embedded: {why}");
            (Vec::new(), why)
        }
    };
    let mut table = String::from("/// The page's files: path under the dist folder, bytes.\n");
    table.push_str("pub static UI_ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        let _ = writeln!(table, "    ({rel:?}, include_bytes!({abs:?})),");
    }
    table.push_str("];\n/// Why there is no page (empty when there is).\n");
    let _ = writeln!(table, "pub static UI_MISSING: &str = {missing:?};");
    let _ = writeln!(table, "/// The command that builds the page by hand.");
    let _ = writeln!(
        table,
        "pub static UI_BUILD_COMMAND: &str = {BUILD_COMMAND:?};"
    );
    fs::write(out.join("ui_assets.rs"), table).expect("OUT_DIR is writable");
}

/// The built page's folder for the current sources, building it if needed; or why there is
/// none.
fn page(web: &Path) -> Result<PathBuf, String> {
    if !web.join("package.json").exists() {
        return Err("this source tree has no web/ folder".into());
    }
    let hash = sources_hash(web);
    let dist = web.join("dist").join(&hash);
    if dist.join("index.html").exists() {
        return Ok(dist);
    }
    if std::env::var_os("WICK_SKIP_WEB_BUILD").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(format!(
            "WICK_SKIP_WEB_BUILD is set and web/dist/{hash} is not built"
        ));
    }
    let _lock = Lock::take(&web.join("dist").join(".lock"))?;
    // Another build script may have built it while this one waited for the lock.
    if dist.join("index.html").exists() {
        return Ok(dist);
    }
    build(web, &dist)?;
    remove_other_builds(&web.join("dist"), &hash);
    Ok(dist)
}

/// `npm ci` when the lockfile changed, then `npm run build` into a temporary folder renamed to
/// `dist` once complete.
fn build(web: &Path, dist: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let version = Command::new(npm).arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Err("Node.js 20+ and npm are not installed (needed to build the page)".into());
    }
    let lock_hash = fnv(&fs::read(web.join("package-lock.json")).unwrap_or_default());
    let stamp = web.join("node_modules").join(".wick-lock-hash");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(lock_hash.as_str()) {
        run(
            Command::new(npm).args(["ci", "--no-audit", "--no-fund"]),
            web,
            "npm ci",
        )?;
        fs::write(&stamp, &lock_hash).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    }
    let tmp = dist.with_file_name(format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let mut cmd = Command::new(npm);
    cmd.args(["run", "build"]).env("WICK_WEB_OUT_DIR", &tmp);
    run(&mut cmd, web, "npm run build")?;
    fs::rename(&tmp, dist).map_err(|e| format!("moving the built page into place: {e}"))
}

fn run(cmd: &mut Command, dir: &Path, what: &str) -> Result<(), String> {
    let out = cmd
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    Err(format!(
        "{what} failed ({}): {} {}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    ))
}

/// Old builds go: only the current one is kept.
fn remove_other_builds(dist: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dist) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name != keep && !name.starts_with('.') {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// FNV-1a over the sources' relative paths and contents, in path order.
fn sources_hash(web: &Path) -> String {
    let mut files = Vec::new();
    for s in SOURCES {
        collect(&web.join(s), &mut files);
    }
    files.sort();
    let mut all = Vec::new();
    for f in files {
        all.extend_from_slice(
            f.strip_prefix(web)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        all.push(0);
        all.extend_from_slice(&fs::read(&f).unwrap_or_default());
        all.push(0);
    }
    fnv(&all)
}

fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(entries) = fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            collect(&e.path(), out);
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
}

/// The built files: (path relative to `dist` with `/`, absolute path).
fn list_files(dist: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect(dist, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f
                .strip_prefix(dist)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            Some((rel, f.to_string_lossy().into_owned()))
        })
        .collect()
}

/// A lock directory, taken by creating it; a stale one (older than ten minutes: its build
/// script died) is taken over.
struct Lock(PathBuf);

impl Lock {
    fn take(path: &Path) -> Result<Lock, String> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("creating web/dist: {e}"))?;
        }
        let start = SystemTime::now();
        loop {
            if fs::create_dir(path).is_ok() {
                return Ok(Lock(path.to_path_buf()));
            }
            let age = fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > Duration::from_secs(600)) {
                let _ = fs::remove_dir(path);
                continue;
            }
            if start.elapsed().unwrap_or_default() > Duration::from_secs(900) {
                return Err(format!("{} is held by another build", path.display()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
