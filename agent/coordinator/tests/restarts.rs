//! Restarts never roll back and crashes never corrupt: the persisted history is authoritative
//! over `--manifest`, and the state dir survives `kill -9` at any point of a manifest update.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::{Config, Coordinator};
use podmesh_tests::harness::Proc;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::api::Reason;
use wire::client::{Client, ClientError, ServerTrust};

const BIN: &str = env!("CARGO_BIN_EXE_podmesh-coordinator");

fn owner_config(platform: &SimPlatform) -> (Config, String, String) {
    let (token, hash) = coordinator::owner::generate();
    let owner = coordinator::owner::OwnerToken::from_hash_hex(&hash).unwrap();
    (Config { owner: Some(owner), ..sim_config(platform) }, token, hash)
}

/// M2 of the tests: M1 with the db policy revoked.
fn without_db(m1: &serde_json::Value) -> serde_json::Value {
    let mut m2 = m1.clone();
    m2["policies"].as_object_mut().unwrap().remove(&hex::encode(DB_HOST_DATA)).expect("db policy");
    m2
}

fn expect_reason<T: std::fmt::Debug>(r: Result<T, ClientError>, want: Reason) {
    match r {
        Err(ClientError::Rejected { reason, detail, .. }) => assert_eq!(reason, want, "{detail}"),
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// Runs `serve` to its exit (at most `timeout`); None when it was still running (then killed).
fn serve_until_exit(args: &[&std::ffi::OsStr], timeout: Duration) -> Option<(bool, String)> {
    let mut command = Command::new(BIN);
    command.arg("serve").args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut serve = Proc::spawn("podmesh-coordinator serve", &mut command).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = serve.child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(serve.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return Some((status.success(), stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Start with M1, the owner PUTs M2 (revoking db), restart with `--manifest M1`: refused with
/// one line that says what to do; the revocation stays. `--apply-manifest` makes M1 a new
/// generation explicitly.
#[tokio::test]
async fn a_restart_with_the_older_manifest_is_refused_and_the_revocation_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let state = tmp.path().join("state");
    let (config, token, hash) = owner_config(&platform);
    let m1 = manifest_json(true, &MEASUREMENT);
    let db = platform.guest(MEASUREMENT, DB_HOST_DATA);

    let running = start(&state, Some(manifest(&m1)), config.clone(), Limits::default()).await;
    let client = running.client();
    attest(&client, &db, &Workload::new()).await.expect("db is admitted by M1");
    let m2 = without_db(&m1);
    assert_eq!(client.set_manifest(&token, serde_json::to_vec(&m2).unwrap()).await.unwrap().generation, 2);
    expect_reason(attest(&client, &db, &Workload::new()).await, Reason::UnknownHostData);
    running.stop().await;

    // the unit's --manifest still names M1: the binary refuses to start, in one line
    let m1_path = tmp.path().join("m1.json");
    std::fs::write(&m1_path, m1.to_string()).unwrap();
    let hash_path = tmp.path().join("owner.sha256");
    std::fs::write(&hash_path, &hash).unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--state".as_ref(),
        state.as_os_str(),
        "--manifest".as_ref(),
        m1_path.as_os_str(),
        "--owner-token-file".as_ref(),
        hash_path.as_os_str(),
        "--sim-anchor".as_ref(),
        platform.anchor.as_os_str(),
    ];
    let (ok, stderr) =
        serve_until_exit(&args, Duration::from_secs(15)).expect("a coordinator started with the older manifest");
    assert!(!ok, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("--apply-manifest")).collect();
    assert_eq!(lines.len(), 1, "one line says what to do: {stderr}");
    assert!(lines[0].contains("generation 2") && lines[0].contains("drop --manifest"), "{}", lines[0]);

    // the revocation stays: without --manifest (or with M2) generation 2 serves, db is refused
    for given in [None, Some(manifest(&m2))] {
        let running = start(&state, given, config.clone(), Limits::default()).await;
        let ca = running.client().ca().await.unwrap();
        assert_eq!(ca.manifest_generation, 2);
        expect_reason(attest(&running.client(), &db, &Workload::new()).await, Reason::UnknownHostData);
        running.stop().await;
    }
    // in-process the same refusal
    let err = Coordinator::open(&state, Some(manifest(&m1)), config.clone()).err().expect("refused");
    assert!(err.to_string().contains("--apply-manifest"), "{err}");

    // explicitly applied, M1 is the next generation, as a PUT would make it
    let apply = Config { apply_manifest: true, ..config };
    let running = start(&state, Some(manifest(&m1)), apply, Limits::default()).await;
    let after = running.client().manifest().await.unwrap();
    assert_eq!(after.generation, 3);
    attest(&running.client(), &db, &Workload::new()).await.expect("db admitted again, on purpose");
    running.stop().await;
    assert!(!state.join("generations/2/mesh-ca.key").exists());
}

/// The state of a stopped coordinator, read from the files.
struct OnDisk {
    generation: u64,
    keys: Vec<u64>,
    newest_dir: u64,
}

fn on_disk(state: &Path) -> OnDisk {
    let generation = std::fs::read_to_string(state.join("current")).unwrap().trim().parse().unwrap();
    let (mut keys, mut newest_dir) = (Vec::new(), 0);
    for entry in std::fs::read_dir(state.join("generations")).unwrap() {
        let entry = entry.unwrap();
        let n: u64 = entry.file_name().to_str().unwrap().parse().unwrap();
        newest_dir = newest_dir.max(n);
        if entry.path().join("mesh-ca.key").exists() {
            keys.push(n);
        }
    }
    OnDisk { generation, keys, newest_dir }
}

fn spawn_serve(port: u16, state: &Path, first: Option<&Path>, hash: &Path, anchor: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"]).arg(state);
    if let Some(m) = first {
        cmd.arg("--manifest").arg(m);
    }
    cmd.arg("--owner-token-file").arg(hash).arg("--sim-anchor").arg(anchor);
    cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    Proc::spawn("podmesh-coordinator serve", &mut cmd).unwrap()
}

/// What the owner sent: the generation each acknowledged manifest got, and the one in flight.
#[derive(Default)]
struct Owner {
    acked: Option<(u64, String)>,
    in_flight: Option<String>,
}

/// `kill -9` at random points of a loop of manifest updates, 100 times: every restart comes up,
/// with the same root, a generation that is the last acknowledged one or the one after (an
/// update that landed without its answer), that generation's manifest, and exactly one mesh CA
/// key, the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_manifest_updates_never_corrupts_or_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let state = tmp.path().join("state");
    let (token, hash) = coordinator::owner::generate();
    let hash_path = tmp.path().join("owner.sha256");
    std::fs::write(&hash_path, &hash).unwrap();
    let m1: PathBuf = tmp.path().join("m1.json");
    let base = manifest_json(true, &MEASUREMENT);
    std::fs::write(&m1, base.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}");

    let mut serve = spawn_serve(port, &state, Some(&m1), &hash_path, &platform.anchor);
    let root_pem = wait_serving(&mut serve, &state, &url).await;
    let client = Arc::new(Client::new(&url, ServerTrust::RootCaPem(root_pem.clone())).unwrap());
    let mut ca = client.ca().await.unwrap();
    // (the certificate is written before the key: read the key once it serves)
    let root_key = std::fs::read(state.join("root-ca.key")).unwrap();
    let mut acked = (ca.manifest_generation, ca.manifest_sha256.clone());
    let mut counter = 0u64;
    let (mut landed_unacked, mut leftover_keys) = (0, 0);
    let started = Instant::now();
    for round in 0..100 {
        // the owner updates as fast as the coordinator answers
        let owner = Arc::new(Mutex::new(Owner::default()));
        let updates = {
            let (client, owner, token, base) = (client.clone(), owner.clone(), token.clone(), base.clone());
            let first = counter;
            tokio::spawn(async move {
                for n in first.. {
                    let mut m = base.clone();
                    m["policies"][hex::encode(WEB_HOST_DATA)]["sans"]
                        .as_array_mut()
                        .unwrap()
                        .push(format!("v{n}").into());
                    let sha = manifest(&m).sha256;
                    owner.lock().unwrap().in_flight = Some(sha.clone());
                    match client.set_manifest(&token, serde_json::to_vec(&m).unwrap()).await {
                        Ok(r) => {
                            assert_eq!(r.manifest_sha256, sha);
                            *owner.lock().unwrap() = Owner { acked: Some((r.generation, sha)), in_flight: None };
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        let delay = Duration::from_millis(rand::rng().random_range(0..200));
        tokio::time::sleep(delay).await;
        serve.child.kill().unwrap(); // SIGKILL
        serve.child.wait().unwrap();
        updates.abort();
        let _ = updates.await;
        counter += 1000;
        let (last_ack, in_flight) = {
            let o = owner.lock().unwrap();
            (o.acked.clone().unwrap_or_else(|| acked.clone()), o.in_flight.clone())
        };
        acked = last_ack;

        let disk = on_disk(&state);
        if disk.keys.len() > 1 {
            leftover_keys += 1;
        }
        serve = spawn_serve(port, &state, None, &hash_path, &platform.anchor);
        assert_eq!(wait_serving(&mut serve, &state, &url).await, root_pem, "round {round}: the root changed");
        ca = client.ca().await.unwrap();
        assert_eq!(ca.root_ca_pem, root_pem, "round {round}: the root changed");
        assert_eq!(std::fs::read(state.join("root-ca.key")).unwrap(), root_key, "round {round}");
        if ca.manifest_generation == acked.0 {
            assert_eq!(ca.manifest_sha256, acked.1, "round {round}: generation {} is not what was acked", acked.0);
        } else {
            assert_eq!(ca.manifest_generation, acked.0 + 1, "round {round}: last acked {}", acked.0);
            assert_eq!(Some(&ca.manifest_sha256), in_flight.as_ref(), "round {round}: not the manifest in flight");
            landed_unacked += 1;
            acked = (ca.manifest_generation, ca.manifest_sha256.clone());
        }
        let disk = on_disk(&state);
        assert_eq!(disk.generation, ca.manifest_generation);
        assert_eq!(disk.keys, vec![disk.generation], "round {round}: only the current mesh CA key stays");
        assert_eq!(disk.newest_dir, disk.generation, "round {round}: a generation after the current one stays");
    }
    drop(serve);
    eprintln!(
        "100 kills in {:?}: last generation {}, {landed_unacked} updates landed without their ack, {leftover_keys} kills left a second mesh CA key (superseded or not yet live; removed at restart)",
        started.elapsed(),
        acked.0
    );
    assert!(acked.0 > 50, "the loop made updates: generation {}", acked.0);
}

/// The order of the state writes, as the kernel sees it (strace): every file is fsynced before
/// it is renamed into place; the new generation's directory entry (`generations/`) and its
/// files' entries are fsynced before `current` flips; `current` is durable before the old key
/// is deleted, and the delete is made durable too. `kill -9` cannot show this (the page cache
/// survives a killed process), a power cut would.
#[tokio::test]
async fn state_writes_reach_the_disk_before_current_flips() {
    let strace = ["/usr/bin/strace", "/bin/strace"].into_iter().find(|p| Path::new(p).exists());
    let strace = strace.expect("strace is needed to observe the write order (apt-get install strace)");
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let state = tmp.path().join("state");
    drop(Coordinator::open(&state, Some(manifest(&manifest_json(true, &MEASUREMENT))), sim_config(&platform)).unwrap());
    let m2 = tmp.path().join("m2.json");
    std::fs::write(&m2, manifest_json(true, &[0xc3; 48]).to_string()).unwrap();
    let trace = tmp.path().join("strace.txt");
    let mut command = Command::new(strace);
    command
        .args([
            "-f",
            "-qq",
            "-y",
            "-s",
            "256",
            "-e",
            "trace=mkdir,mkdirat,rename,renameat,renameat2,fsync,fdatasync,unlink,unlinkat",
            "-o",
        ])
        .arg(&trace)
        .arg(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--apply-manifest", "--state"])
        .arg(&state)
        .arg("--manifest")
        .arg(&m2)
        .arg("--sim-anchor")
        .arg(&platform.anchor)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // killing strace would leave its tracee running: Proc kills both
    let mut traced = Proc::spawn("strace podmesh-coordinator serve", &mut command).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    let mut stderr = std::io::BufReader::new(traced.child.stderr.take().unwrap());
    while !log.contains("coordinator listening") {
        assert!(Instant::now() < deadline, "no listening line: {log}");
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            panic!("the coordinator exited: {log}");
        }
        log.push_str(&line);
    }
    let tracees = traced.grandchildren();
    assert!(!tracees.is_empty(), "strace has no tracee");
    drop(traced);
    for pid in tracees {
        // gone, or a zombie waiting for its new parent to reap it
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() {
            assert!(Instant::now() < deadline, "the traced coordinator {pid} outlived the test");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let trace = std::fs::read_to_string(&trace).unwrap();
    let s = state.to_str().unwrap();
    let events: Vec<&str> = trace.lines().filter(|l| l.contains(" = 0")).collect();
    let find =
        |what: &dyn Fn(&str) -> bool, from: usize| events.iter().skip(from).position(|l| what(l)).map(|i| i + from);
    let fsync_of = |path: String| move |l: &str| l.contains("fsync(") && l.contains(&format!("<{path}>"));
    let g2 = format!("{s}/generations/2");
    let mkdir = find(&|l| l.contains("mkdir") && l.contains(&format!("\"{g2}\"")), 0).expect("mkdir of generation 2");
    let flip =
        find(&|l| l.contains("rename") && l.contains(&format!("\"{s}/current\"")), mkdir).expect("rename of current");
    let delete =
        find(&|l| l.contains("unlink") && l.contains("generations/1/mesh-ca.key"), flip).expect("old key deleted");
    // every rename into generation 2 follows an fsync of its temp file
    for (i, l) in events.iter().enumerate().take(flip).skip(mkdir) {
        if l.contains("rename") {
            let tmp_path = l.split('"').nth(1).unwrap();
            assert!(
                events[..i].iter().any(|e| e.contains("fsync(") && e.contains(&format!("<{tmp_path}>"))),
                "{tmp_path} renamed without an fsync:\n{trace}"
            );
        }
    }
    let last_rename = (mkdir..flip).rev().find(|&i| events[i].contains("rename")).expect("files of generation 2");
    assert!(
        find(&fsync_of(format!("{s}/generations")), mkdir).is_some_and(|i| i < flip),
        "generations/ (the new directory's entry) not fsynced before current flips:\n{trace}"
    );
    assert!(
        find(&fsync_of(g2.clone()), last_rename).is_some_and(|i| i < flip),
        "generations/2 not fsynced after its last file and before current flips:\n{trace}"
    );
    assert!(
        find(&fsync_of(s.to_owned()), flip).is_some_and(|i| i < delete),
        "current not durable before the old key goes:\n{trace}"
    );
    assert!(
        find(&fsync_of(format!("{s}/generations/1")), delete).is_some(),
        "the delete of the old key is not made durable:\n{trace}"
    );
}
