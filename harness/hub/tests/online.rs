//! Downloads against a fake Hub: a tiny HTTP/1.1 server on 127.0.0.1 speaking the `resolve`
//! protocol that hf-hub and huggingface_hub rely on.
#![cfg(unix)]
use moebench_hub::{resolve, resolve_dataset, DownloadCause, HubConfig, HubError, ModelRef};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const SHA: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
const TOKEN: &str = "hf_secret";

/// How the fake Hub serves a file.
#[derive(Clone, Copy)]
enum Kind {
    /// Served by `resolve` itself with a git-style etag.
    Plain,
    /// Same, but with a weak etag (`W/"…"`).
    WeakEtag,
    /// LFS: `resolve` redirects to `/cdn/<sha256>`, announced in `x-linked-etag`.
    Lfs,
    /// LFS whose announced sha256 does not match the bytes.
    Corrupt,
    /// The connection closes halfway through the body.
    Truncated,
}

struct File {
    content: &'static [u8],
    kind: Kind,
}

/// The etag the fake Hub announces for `content`.
fn etag(content: &[u8], kind: Kind) -> String {
    let sha = format!("{:x}", Sha256::digest(content));
    match kind {
        Kind::Lfs => sha,
        Kind::Corrupt => format!("{:x}", Sha256::digest(b"other bytes")),
        _ => sha[..40].to_owned(),
    }
}

impl File {
    fn etag(&self) -> String {
        etag(self.content, self.kind)
    }
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

struct FakeHub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// `files` maps `org/name/<file>` (models) or `datasets/org/name/<file>` to what is served.
    fn start(files: &[(&str, &'static [u8], Kind)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: HashMap<String, File> = files
            .iter()
            .map(|&(key, content, kind)| (key.to_owned(), File { content, kind }))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (requests, stop) = (requests.clone(), stop.clone());
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    serve(stream.unwrap(), &files, addr, &requests);
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes up `accept`
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Answers one request and closes the connection. The request is logged before the answer is
/// written: a client that has its answer must find its request in the log (logging after the
/// write raced with the tests' request counts).
fn serve(
    mut stream: TcpStream,
    files: &HashMap<String, File>,
    addr: SocketAddr,
    log: &Mutex<Vec<Request>>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let mut parts = first.split(' ');
    let (method, path) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let headers = lines
        .map(Result::unwrap)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<HashMap<_, _>>();
    let request = Request {
        method,
        path,
        headers,
    };
    let (status, extra, body, cut) = answer(&request, files, addr);
    let is_head = request.method == "HEAD";
    log.lock().unwrap().push(request);
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head += &format!("{name}: {value}\r\n");
    }
    stream.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    if !is_head {
        let _ = stream.write_all(&body[..if cut { body.len() / 2 } else { body.len() }]);
    }
}

type Answer = (&'static str, Vec<(&'static str, String)>, Vec<u8>, bool);

fn answer(request: &Request, files: &HashMap<String, File>, addr: SocketAddr) -> Answer {
    let not_found = || {
        (
            "404 Not Found",
            vec![("x-error-code", "EntryNotFound".to_owned())],
            vec![],
            false,
        )
    };
    if let Some(etag) = request.path.strip_prefix("/cdn/") {
        let file = files.values().find(|file| file.etag() == etag);
        return file.map_or_else(not_found, |file| content(request, file, vec![]));
    }
    let Some((repo, rest)) = request.path.split_once("/resolve/") else {
        return not_found();
    };
    let Some((revision, name)) = rest.split_once('/') else {
        return not_found();
    };
    let key = format!("{}/{name}", &repo[1..]);
    let file = match files.get(&key) {
        Some(file) if revision == "main" || revision == SHA => file,
        _ => return not_found(),
    };
    let commit = ("x-repo-commit", SHA.to_owned());
    match file.kind {
        Kind::Lfs | Kind::Corrupt => {
            let headers = vec![
                commit,
                ("x-linked-etag", format!("\"{}\"", file.etag())),
                ("x-linked-size", file.content.len().to_string()),
                // Another host name for the same server, standing in for the CDN.
                (
                    "location",
                    format!("http://localhost:{}/cdn/{}", addr.port(), file.etag()),
                ),
            ];
            ("302 Found", headers, vec![], false)
        }
        Kind::WeakEtag => content(
            request,
            file,
            vec![commit, ("etag", format!("W/\"{}\"", file.etag()))],
        ),
        Kind::Plain | Kind::Truncated => content(
            request,
            file,
            vec![commit, ("etag", format!("\"{}\"", file.etag()))],
        ),
    }
}

/// The bytes of `file`, honouring `Range: bytes=a-b` / `bytes=a-`.
fn content(request: &Request, file: &File, mut headers: Vec<(&'static str, String)>) -> Answer {
    let len = file.content.len();
    let range = request.headers.get("range").and_then(|range| {
        let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
        let start: usize = start.parse().ok()?;
        Some((start, end.parse().unwrap_or(len - 1)))
    });
    match range {
        Some((start, end)) => {
            headers.push(("content-range", format!("bytes {start}-{end}/{len}")));
            (
                "206 Partial Content",
                headers,
                file.content[start..=end].to_vec(),
                false,
            )
        }
        None => (
            "200 OK",
            headers,
            file.content.to_vec(),
            matches!(file.kind, Kind::Truncated),
        ),
    }
}

fn online(cache: &Path, hub: &FakeHub) -> HubConfig {
    HubConfig {
        cache_dir: cache.to_owned(),
        offline: false,
        token: Some(TOKEN.to_owned()),
        endpoint: hub.url(),
    }
}

fn model(reference: &str) -> ModelRef {
    reference.parse().unwrap()
}

fn tiny_hub() -> FakeHub {
    FakeHub::start(&[
        (
            "org/tiny/config.json",
            b"{\"model_type\": \"tiny\"}",
            Kind::Plain,
        ),
        (
            "org/tiny/tokenizer.json",
            b"{\"model\": {}}",
            Kind::WeakEtag,
        ),
        (
            "org/tiny/model.safetensors",
            b"0123456789 weights",
            Kind::Lfs,
        ),
        (
            "org/tiny/cut.bin",
            b"this body will be cut in half",
            Kind::Truncated,
        ),
        (
            "org/tiny/bad.safetensors",
            b"bytes that do not match",
            Kind::Corrupt,
        ),
    ])
}

/// Every path below `dir`, links not followed.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

fn assert_no_partial_files(cache: &Path) {
    for path in walk(cache) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            !name.ends_with(".incomplete") && !name.ends_with(".part") && !name.ends_with(".lock"),
            "left behind: {}",
            path.display()
        );
    }
}

#[test]
fn downloads_into_the_cache_layout_once() {
    let hub = tiny_hub();
    let cache = tempfile::tempdir().unwrap();
    let config = online(cache.path(), &hub);
    let required = ["config.json", "model.safetensors"];
    let optional = ["tokenizer.json", "generation_config.json"];
    let resolved = resolve(&config, &model("org/tiny"), &required, &optional).unwrap();

    let repo = cache.path().join("models--org--tiny");
    let snapshot = repo.join("snapshots").join(SHA);
    assert_eq!(resolved.commit.as_deref(), Some(SHA));
    assert_eq!(resolved.dir, snapshot);
    assert_eq!(
        resolved.files.keys().collect::<Vec<_>>(),
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), SHA);
    for (file, etag) in [
        (
            "config.json",
            etag(b"{\"model_type\": \"tiny\"}", Kind::Plain),
        ),
        ("model.safetensors", etag(b"0123456789 weights", Kind::Lfs)),
        ("tokenizer.json", etag(b"{\"model\": {}}", Kind::WeakEtag)),
    ] {
        let pointer = snapshot.join(file);
        assert_eq!(resolved.files[file], pointer);
        let target = PathBuf::from(format!("../../blobs/{etag}"));
        assert_eq!(fs::read_link(&pointer).unwrap(), target, "{file}");
        assert_eq!(
            fs::read(&pointer).unwrap(),
            fs::read(repo.join("blobs").join(&etag)).unwrap()
        );
    }
    // The Hub said it does not exist: remembered, as huggingface_hub does.
    assert!(repo
        .join(".no_exist")
        .join(SHA)
        .join("generation_config.json")
        .is_file());
    assert_no_partial_files(cache.path());

    {
        let requests = hub.requests.lock().unwrap();
        // The first file is asked at the branch; the commit it reports pins every later one.
        assert_eq!(requests[0].path, "/org/tiny/resolve/main/config.json");
        let resolves: Vec<_> = requests
            .iter()
            .filter(|r| r.path.contains("/resolve/"))
            .collect();
        assert!(resolves[1..]
            .iter()
            .all(|r| r.path.contains(&format!("/resolve/{SHA}/"))));
        for request in resolves {
            let authorization = request.headers.get("authorization").map(String::as_str);
            assert_eq!(authorization, Some("Bearer hf_secret"), "{request:?}");
        }
        assert!(requests.iter().all(|r| r.method == "GET"), "{requests:?}");
        // The transfer does not forward the token to the CDN host (hf-hub's metadata request
        // does, see download.rs).
        let cdn = requests
            .iter()
            .find(|r| r.path.starts_with("/cdn/") && !r.headers.contains_key("range"));
        assert_eq!(cdn.unwrap().headers.get("authorization"), None);
    }

    // Everything is cached now, the missing optional file included: no request at all.
    let before = hub.request_count();
    let again = resolve(&config, &model("org/tiny"), &required, &optional).unwrap();
    assert_eq!(again, resolved);
    let offline = HubConfig {
        offline: true,
        ..config
    };
    assert_eq!(
        resolve(&offline, &model("org/tiny"), &required, &optional).unwrap(),
        resolved
    );
    assert_eq!(hub.request_count(), before);
}

#[test]
fn commit_sha_revision_writes_no_ref() {
    let hub = tiny_hub();
    let cache = tempfile::tempdir().unwrap();
    let config = online(cache.path(), &hub);
    let pinned = model(&format!("org/tiny@{SHA}"));
    let resolved = resolve(&config, &pinned, &["config.json"], &[]).unwrap();
    let repo = cache.path().join("models--org--tiny");
    assert_eq!(
        resolved.files["config.json"],
        repo.join("snapshots").join(SHA).join("config.json")
    );
    assert!(!repo.join("refs").exists());
    assert_eq!(
        hub.requests.lock().unwrap()[0].path,
        format!("/org/tiny/resolve/{SHA}/config.json")
    );

    let before = hub.request_count();
    resolve(&config, &pinned, &["config.json"], &[]).unwrap();
    assert_eq!(hub.request_count(), before);

    // Without a token, no Authorization header is sent.
    let anonymous = HubConfig {
        token: None,
        ..config
    };
    resolve(&anonymous, &pinned, &["tokenizer.json"], &[]).unwrap();
    let requests = hub.requests.lock().unwrap();
    assert!(requests[before..]
        .iter()
        .all(|r| !r.headers.contains_key("authorization")));
}

fn cause(error: &HubError) -> &DownloadCause {
    match error {
        HubError::Download(failure) => &failure.cause,
        other => panic!("not a download failure: {other}"),
    }
}

fn assert_mentions(error: &HubError, parts: &[&str]) {
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

#[test]
fn failures_are_clear_and_leave_nothing_half_written() {
    let hub = tiny_hub();
    let cache = tempfile::tempdir().unwrap();
    let config = online(cache.path(), &hub);
    let snapshot = cache.path().join("models--org--tiny/snapshots").join(SHA);

    let error = resolve(
        &config,
        &model("org/tiny"),
        &["config.json", "nope.json"],
        &[],
    )
    .unwrap_err();
    assert!(matches!(error, HubError::RemoteNotFound { .. }), "{error}");
    let looked_for = snapshot.join("nope.json");
    let url = format!("{}/org/tiny/resolve/{SHA}/nope.json", hub.url());
    assert_mentions(
        &error,
        &[
            "org/tiny",
            "@main",
            "nope.json",
            "404",
            &url,
            looked_for.to_str().unwrap(),
        ],
    );

    let error = resolve(&config, &model("org/tiny@v9"), &["config.json"], &[]).unwrap_err();
    assert!(matches!(error, HubError::RemoteNotFound { .. }), "{error}");
    assert_mentions(&error, &["org/tiny@v9", "config.json", "refs/v9"]);

    let error = resolve(&config, &model("org/tiny"), &["cut.bin"], &[]).unwrap_err();
    assert!(
        matches!(cause(&error), DownloadCause::Transfer(_)),
        "{error}"
    );
    assert_mentions(
        &error,
        &[
            "org/tiny",
            "main",
            "cut.bin",
            snapshot.join("cut.bin").to_str().unwrap(),
        ],
    );

    let error = resolve(&config, &model("org/tiny"), &["bad.safetensors"], &[]).unwrap_err();
    assert!(
        matches!(cause(&error), DownloadCause::Checksum { .. }),
        "{error}"
    );
    assert_mentions(&error, &["bad.safetensors", "sha256"]);

    assert_no_partial_files(cache.path());
    let blobs = fs::read_dir(cache.path().join("models--org--tiny/blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1, "only config.json was stored");
    assert!(!snapshot.join("cut.bin").exists() && !snapshot.join("bad.safetensors").exists());
}

#[test]
fn dataset_files_in_subfolders() {
    let hub = FakeHub::start(&[
        ("datasets/org/data/README.md", b"# data", Kind::Plain),
        (
            "datasets/org/data/data/test-00000-of-00001.parquet",
            b"PAR1 rows",
            Kind::Lfs,
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let config = online(cache.path(), &hub);
    let parquet = "data/test-00000-of-00001.parquet";
    let resolved =
        resolve_dataset(&config, &model("org/data"), &["README.md", parquet], &[]).unwrap();
    let snapshot = cache.path().join("datasets--org--data/snapshots").join(SHA);
    assert_eq!(
        resolved.list("data/*.parquet").unwrap(),
        [snapshot.join(parquet)]
    );
    let target = fs::read_link(snapshot.join(parquet)).unwrap();
    let etag = etag(b"PAR1 rows", Kind::Lfs);
    assert_eq!(target, PathBuf::from(format!("../../../blobs/{etag}")));
    assert_eq!(fs::read(snapshot.join(parquet)).unwrap(), b"PAR1 rows");
    assert_eq!(
        hub.requests.lock().unwrap()[0].path,
        "/datasets/org/data/resolve/main/README.md"
    );
}
