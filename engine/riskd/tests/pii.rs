//! No clear-text identity number, phone or bank card of the input appears in
//! anything the engine writes: `riskd replay`'s decisions, dead letters and
//! logs, and everything a `riskd serve` run against a real broker produces
//! (topics, logs, ops endpoints, and every file under its working directory).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use riskd_testkit::{collect, create_topics, produce, start_broker, unique_topic};

#[test]
fn replay_outputs_hold_no_clear_personal_data() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), riskd_core::KeyRing::generate_file("k1")).unwrap();
    let input = repo.join("replay-data/events.jsonl");
    let out = dir.path().join("decisions.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(&repo)
        .env("RISKD_PII_KEY_FILE", dir.path().join("keys.toml"))
        .env("RISKD_LOG", "debug")
        .env("RISKD_ENGINE_INCLUDE_FEATURES", "true")
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--dead-letters")
        .arg(&dead)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let mut secrets = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for field in ["phone", "id_number", "bank_card"] {
            if let Some(s) = v["entities"][field].as_str() {
                secrets.insert(s.to_string());
            }
        }
    }
    assert!(secrets.len() > 500, "the sample holds identity data to look for ({})", secrets.len());
    let outputs = [
        ("decisions", std::fs::read_to_string(&out).unwrap()),
        ("dead letters", std::fs::read_to_string(&dead).unwrap()),
        ("logs", String::from_utf8_lossy(&run.stderr).into_owned()),
    ];
    assert!(outputs[0].1.lines().count() >= 5000);
    assert!(outputs[1].1.lines().count() >= 8);
    for (what, text) in &outputs {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} contain a clear identity value");
        }
    }
}

/// The clear identity values of `lines` (phones also without their `+`).
fn identity_values(lines: &[Vec<u8>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        for field in ["phone", "id_number", "bank_card"] {
            if let Some(s) = v["entities"][field].as_str() {
                out.insert(s.to_string());
                if let Some(digits) = s.strip_prefix('+') {
                    out.insert(digits.to_string());
                }
            }
        }
    }
    out
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// One HTTP/1.1 request to the ops port; the whole response.
fn http(addr: &str, request: &str, token: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect ops port");
    write!(s, "{request} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_run_writes_no_clear_personal_data_anywhere() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    // Secrets live outside the engine's working directory, as in production.
    let secrets = tempfile::tempdir().unwrap();
    let keys = secrets.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    let token = riskd_kafka::ops::AdminToken::generate();
    // The engine's working directory: anything it writes with a relative
    // path (state, snapshots, reports) lands here and is searched below.
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    // The recorded stream (with its malformed lines) plus inputs that are
    // dead-lettered while carrying identity data in their bytes.
    let text = std::fs::read_to_string(repo.join("replay-data/events.jsonl")).unwrap();
    let mut lines: Vec<Vec<u8>> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.as_bytes().to_vec()).collect();
    let applications: Vec<String> =
        text.lines().filter(|l| l.contains("\"loan_application\"")).take(3).map(String::from).collect();
    let hostile = [
        applications[0].replacen("\"amount\":", "\"amount\":\"oops\",\"was\":", 1), // wrong type
        applications[1].replacen("\"payload\":{", "\"payload\":{\"extra\":1,", 1),  // unknown field
        format!("{}{}", &applications[2][..applications[2].len() / 2], "]]]"),      // cut short
        format!("{{\"pad\":\"{}\",{}", "x".repeat(70_000), &applications[0][1..]),  // oversize
    ];
    lines.extend(hostile.iter().map(|h| h.as_bytes().to_vec()));
    let clear = identity_values(&lines);
    assert!(clear.len() > 1000, "the input holds identity data to look for ({})", clear.len());
    for h in &hostile {
        assert!(clear.iter().any(|c| h.contains(c.as_str())), "each hostile input carries identity data");
    }

    let broker = start_broker();
    let brokers = broker.bootstrap();
    let (input, decisions, dead) = (unique_topic("in"), unique_topic("dec"), unique_topic("dlq"));
    create_topics(&brokers, &[(&input, 2), (&decisions, 2), (&dead, 2)]).await;
    produce(&brokers, &input, &lines, |l| {
        serde_json::from_slice::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["entities"]["user_id"].as_str().map(String::from))
            .unwrap_or_default()
    })
    .await;

    let http_addr = format!("127.0.0.1:{}", riskd_kafka::local_broker::free_port().unwrap());
    let mut engine = Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(work.path())
        .env("RISKD_PII_KEY_FILE", &keys)
        .env("RISKD_ADMIN_TOKEN", &token)
        .env("RISKD_ENGINE_FEATURES_DIR", repo.join("features"))
        .env("RISKD_ENGINE_RULES_DIR", repo.join("rules"))
        .env("RISKD_ENGINE_MODELS", repo.join("models/a_card"))
        .env("RISKD_ENGINE_INCLUDE_FEATURES", "true")
        .env("RISKD_KAFKA_BROKERS", &brokers)
        .env("RISKD_KAFKA_INPUT_TOPICS", &input)
        .env("RISKD_KAFKA_DECISION_TOPIC", &decisions)
        .env("RISKD_KAFKA_DEAD_LETTER_TOPIC", &dead)
        .env("RISKD_KAFKA_GROUP_ID", unique_topic("grp"))
        .env("RISKD_HTTP_LISTEN", &http_addr)
        .env("RISKD_LOG", "debug")
        .arg("serve")
        .stdout(std::fs::File::create(logs.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(logs.join("stderr.log")).unwrap())
        .spawn()
        .expect("start riskd serve");

    let outputs = {
        let (b, d, x) = (brokers.clone(), decisions.clone(), dead.clone());
        let want = lines.len();
        tokio::task::spawn_blocking(move || collect(&b, &[&d, &x], 2, want, Duration::from_secs(240))).await.unwrap()
    };
    let ops = {
        let (addr, token) = (http_addr.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            ["GET /metrics", "GET /healthz", "GET /readyz", "GET /status", "POST /admin/reload", "GET /status"]
                .map(|r| (r, http(&addr, r, &token)))
        })
        .await
        .unwrap()
    };
    let pid = engine.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = engine.wait().unwrap();
    assert!(exit.success(), "serve exits cleanly: {exit}");

    assert_eq!(outputs.len(), lines.len(), "one output per input");
    let dead_count = outputs.iter().filter(|m| m.topic() == dead).count();
    assert!(dead_count >= 8 + hostile.len(), "dead letters were written ({dead_count})");
    for (request, response) in &ops {
        assert!(response.starts_with("HTTP/1.1 200"), "{request}: {response}");
    }

    // Everything written, by where it was written.
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    for m in &outputs {
        let at = format!("{} message at offset {}", m.topic(), m.offset());
        let mut bytes = m.payload().unwrap_or_default().to_vec();
        bytes.extend_from_slice(m.key().unwrap_or_default());
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                bytes.extend_from_slice(h.key.as_bytes());
                bytes.extend_from_slice(h.value.unwrap_or_default());
            }
        }
        written.push((at, bytes));
    }
    for (request, response) in ops {
        written.push((request.to_string(), response.into_bytes()));
    }
    let mut files = Vec::new();
    files_under(work.path(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with(".riskd/state/state.ckpt")),
        "the feature-state checkpoint written at shutdown is among the files searched: {files:?}"
    );
    for f in &files {
        written.push((f.display().to_string(), std::fs::read(f).unwrap()));
    }
    let stderr = std::fs::read_to_string(logs.join("stderr.log")).unwrap();
    assert!(stderr.contains("DEBUG") || stderr.contains("INFO"), "the engine logged: {stderr}");

    let mut found = Vec::new();
    for (what, bytes) in &written {
        let text = String::from_utf8_lossy(bytes);
        if let Some(value) = clear.iter().find(|c| text.contains(c.as_str())) {
            // Say where, never what.
            found.push(format!("{what} (a value of {} characters)", value.len()));
        }
    }
    assert!(found.is_empty(), "clear identity data written to: {found:#?}");
    assert!(written.len() > lines.len(), "searched {} outputs", written.len());
}
