//! One file's transfer into `blobs/`: resume from `<blob>.incomplete` with a `Range` request,
//! hash while writing, check size and sha256 against the hub's, and only then rename to the
//! blob. A mismatch deletes the partial file; an interrupted body keeps it for the next pull.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::client::{Hub, Remote};
use super::{Fetched, HubError};

/// Where the bytes of `blob` land until verified (huggingface_hub's name, so either tool
/// resumes the other's download).
pub fn part_path(blob: &Path) -> PathBuf {
    let mut p = blob.as_os_str().to_owned();
    p.push(".incomplete");
    PathBuf::from(p)
}

/// Makes `blob` hold `remote`'s verified bytes, downloading what is missing.
pub fn fetch(hub: &Hub, remote: &Remote, blob: &Path) -> Result<Fetched, HubError> {
    if let Ok(m) = std::fs::metadata(blob) {
        if remote.size.is_none_or(|s| s == m.len()) {
            return Ok(Fetched::UpToDate);
        }
        std::fs::remove_file(blob).map_err(|e| HubError::io(blob, e))?;
    }
    if let Some(dir) = blob.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
    }
    let part = part_path(blob);
    let mut on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if remote.size.is_some_and(|s| on_disk > s) {
        on_disk = 0;
    }
    let complete = remote.size.is_some_and(|s| s > 0 && on_disk == s);
    let (body, from) = if complete {
        (None, on_disk)
    } else {
        let (r, from) = open_body(hub, remote, on_disk)?;
        (Some(r), from)
    };
    let (mut file, mut hasher) = open_part(&part, from)?;
    let got = match body {
        Some(r) => copy_body(r, &mut file, &mut hasher, remote, from, &part)?,
        None => from,
    };
    drop(file);
    verify(remote, &part, got, hasher)?;
    std::fs::rename(&part, blob).map_err(|e| HubError::io(blob, e))?;
    Ok(Fetched::Downloaded {
        bytes: got,
        resumed_from: from,
    })
}

/// Starts the body from `on_disk` bytes when the hub honours the range, else from 0.
fn open_body(hub: &Hub, remote: &Remote, on_disk: u64) -> Result<(ureq::Response, u64), HubError> {
    if on_disk > 0 {
        let r = hub.get(remote, on_disk)?;
        let start = r
            .header("content-range")
            .and_then(|v| v.trim().strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if r.status() == 206 && start == Some(on_disk) {
            return Ok((r, on_disk));
        }
        if r.status() == 200 {
            return Ok((r, 0));
        }
    }
    let r = hub.get(remote, 0)?;
    if r.status() != 200 {
        return Err(HubError::Protocol {
            url: remote.url.clone(),
            detail: format!("HTTP {} to a GET of the whole file", r.status()),
        });
    }
    Ok((r, 0))
}

/// Opens the partial file cut to `keep` bytes, positioned at its end, with those bytes hashed.
fn open_part(part: &Path, keep: u64) -> Result<(File, Sha256), HubError> {
    let io = |e| HubError::io(part, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(io)?;
    file.set_len(keep).map_err(io)?;
    let mut hasher = Sha256::new();
    if keep > 0 {
        std::io::copy(&mut (&mut file).take(keep), &mut hasher).map_err(io)?;
    }
    file.seek(SeekFrom::Start(keep)).map_err(io)?;
    Ok((file, hasher))
}

/// Appends the body to `file`, hashing it and drawing the progress bar. Returns the file's
/// length. A read failure keeps what was written and says how far it got.
fn copy_body(
    resp: ureq::Response,
    file: &mut File,
    hasher: &mut Sha256,
    remote: &Remote,
    from: u64,
    part: &Path,
) -> Result<u64, HubError> {
    let bar = progress_bar(remote, from);
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = from;
    let result = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(got),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(interrupted(remote, got, &e.to_string())),
        };
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(HubError::io(part, e));
        }
        hasher.update(&buf[..n]);
        got += n as u64;
        bar.set_position(got);
    };
    bar.finish_and_clear();
    file.flush().map_err(|e| HubError::io(part, e))?;
    result
}

fn interrupted(remote: &Remote, got: u64, detail: &str) -> HubError {
    HubError::Interrupted {
        file: remote.name.clone(),
        got,
        size: remote
            .size
            .map_or_else(|| "?".to_string(), |s| s.to_string()),
        detail: detail.to_string(),
    }
}

/// Checks the finished partial file against the hub's size and sha256; deletes it on a
/// mismatch. A short file is an interrupted download and stays.
fn verify(remote: &Remote, part: &Path, got: u64, hasher: Sha256) -> Result<(), HubError> {
    let discard = |err: HubError| {
        let _ = std::fs::remove_file(part);
        Err(err)
    };
    match remote.size {
        Some(s) if got < s => return Err(interrupted(remote, got, "connection closed early")),
        Some(s) if got > s => {
            return discard(HubError::SizeMismatch {
                file: remote.name.clone(),
                got,
                expected: s,
            })
        }
        _ => {}
    }
    if let Some(expected) = remote.sha256() {
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(expected) {
            return discard(HubError::HashMismatch {
                file: remote.name.clone(),
                got,
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}

fn progress_bar(remote: &Remote, from: u64) -> indicatif::ProgressBar {
    // Drawn only when stderr is a terminal; hidden otherwise (logs, tests, init containers).
    let bar = indicatif::ProgressBar::with_draw_target(
        remote.size,
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(remote.name.clone());
    bar.set_position(from);
    bar
}
