//! `riskd`: one binary, one config file. This file only parses arguments
//! and calls into the engine's libraries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

// jemalloc with transparent huge pages: see the crate.
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use riskd_alloc as _;
use riskd_core::KeyRing;
use riskd_kafka::ops::{AdminToken, ADMIN_TOKEN_ENV};
use riskd_pipeline::{Config, Deployment, Pipeline};

#[derive(Parser)]
#[command(name = "riskd", version, about = "Real-time streaming risk engine for online lending")]
struct Cli {
    /// Config file. Default: ./riskd.toml when present, else built-in defaults.
    #[arg(long, short, global = true, env = "RISKD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config, features, rules and models without running.
    Check,
    /// Consume the input topics and publish decisions (live).
    Serve,
    /// Decide a recorded event file (JSONL, optionally .gz) into a decision file.
    Replay {
        /// Recorded events.
        #[arg(long, short)]
        input: PathBuf,
        /// Decisions out (JSONL); `-` for standard output.
        #[arg(long, short, default_value = "-")]
        out: PathBuf,
        /// Dead letters out (JSONL). Default: next to --out, or ./dead-letters.jsonl.
        #[arg(long)]
        dead_letters: Option<PathBuf>,
        /// Checkpoint feature state and the input position here; a replay
        /// killed midway and started again with the same arguments resumes
        /// where the last checkpoint stood. Removed when the replay completes.
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
        /// Inputs between checkpoints.
        #[arg(long, default_value_t = 1_000_000)]
        checkpoint_every: u64,
    },
    /// Replay a labelled event file through a baseline and a candidate
    /// configuration in one pass and report what would change.
    Backtest {
        /// Recorded events (JSONL, optionally .gz).
        #[arg(long, short)]
        input: PathBuf,
        /// Outcome labels, `event_id,bad` (1 bad, 0 good); events without one are reported as unlabelled.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Directory for the tables (CSV), report.json and report.html.
        #[arg(long)]
        out_dir: PathBuf,
        /// Baseline config file. Default: the config in force (--config, else ./riskd.toml).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Candidate config file. Default: the baseline's; the --candidate-* options override it.
        #[arg(long)]
        candidate: Option<PathBuf>,
        /// Candidate rules directory.
        #[arg(long)]
        candidate_rules: Option<PathBuf>,
        /// Candidate features directory.
        #[arg(long)]
        candidate_features: Option<PathBuf>,
        /// Candidate model directory (repeat for several; replaces the baseline's list).
        #[arg(long = "candidate-model")]
        candidate_models: Vec<PathBuf>,
        /// Also write both configurations' decision records into the output
        /// directory (with model reason codes, as `replay` writes them).
        #[arg(long)]
        decisions: bool,
        /// Compute model reason codes although the report does not use them
        /// (they never change an action or a score; on by default with --decisions).
        #[arg(long)]
        reason_codes: bool,
    },
    /// Start a local broker, stream replay-data through the engine and show decisions.
    Demo(riskd_kafka::demo::DemoArgs),
    /// Open-loop load test through a broker: the engine against a pass-through, at several rates.
    Loadtest(riskd_kafka::loadtest::LoadtestArgs),
    /// Generate a synthetic lending event stream.
    Gen(riskd_gen::GenArgs),
    /// Train a scorecard on replayed events with the serving feature code.
    Train {
        #[arg(long)]
        events: PathBuf,
        #[arg(long)]
        labels: PathBuf,
        /// Model directory holding manifest.toml; the model file is written there.
        #[arg(long)]
        model_dir: PathBuf,
        /// Share of the latest labelled events held out for evaluation.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// LightGBM parameters as JSON, merged over the defaults.
        #[arg(long, default_value = "{}")]
        params: String,
    },
    /// Feature tools.
    Features {
        #[command(subcommand)]
        command: FeaturesCommand,
    },
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Key file tools.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Dead-letter tools (for authorised operators).
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Subcommand)]
enum FeaturesCommand {
    /// Every feature value of one recorded event, with the events that produced it.
    Explain {
        /// Recorded events (JSONL, optionally .gz), read in replay order.
        #[arg(short, long)]
        input: PathBuf,
        #[arg(long)]
        event_id: String,
        /// Contributing events listed per feature (the count is always given).
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run the analyst tests in <rules_dir>/tests.
    Test,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new key file with random keys (refuses to overwrite).
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a new random admin token for the admin endpoints (refuses to overwrite).
    AdminToken {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Print the decrypted original bytes of each dead letter in a JSONL file.
    Decrypt { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RISKD_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(path: &Option<PathBuf>) -> Result<Config> {
    let default = Path::new("riskd.toml");
    let path = path.as_deref().or(default.exists().then_some(default));
    Ok(Config::load(path, std::env::vars())?)
}

fn load_keys(cfg: &Config) -> Result<KeyRing> {
    let path = &cfg.pii.key_file;
    if !path.exists() {
        bail!(
            "no key file at {}: create one with `riskd keys generate --out {}` and keep it out of version control (or set RISKD_PII_KEY_FILE)",
            path.display(),
            path.display()
        );
    }
    Ok(KeyRing::load(path)?)
}

/// The feature set alone (commands that need no rules or models).
fn load_features(cfg: &Config) -> Result<Arc<riskd_features::FeatureSet>> {
    let set = riskd_features::FeatureSet::load(&cfg.engine.features_dir)
        .map_err(|errs| anyhow::anyhow!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
    Ok(Arc::new(set))
}

fn load_deployment(cfg: &Config) -> Result<Deployment> {
    Deployment::load(&cfg.engine).map_err(|e| anyhow::anyhow!("{} problem(s) found:\n{e}", e.count()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gen(args) => {
            let stats = riskd_gen::run(&args)?;
            eprintln!("{stats}");
        }
        Command::Keys { command: KeysCommand::Generate { out } } => {
            if out.exists() {
                bail!("{} exists; refusing to overwrite a key file", out.display());
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            write_private(&out, &KeyRing::generate_file("k1"))?;
            eprintln!("wrote {} (keep it apart from the config, readable only by the engine)", out.display());
        }
        Command::Keys { command: KeysCommand::AdminToken { out } } => {
            if out.exists() {
                bail!("{} exists; refusing to overwrite an admin token", out.display());
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            write_private(&out, &format!("{}\n", AdminToken::generate()))?;
            eprintln!("wrote {} (point http.admin_token_file at it; give the token only to operators)", out.display());
        }
        Command::Check => {
            let cfg = load_config(&cli.config)?;
            let keys = cfg.pii.key_file.exists().then(|| KeyRing::load(&cfg.pii.key_file)).transpose()?;
            let dep = load_deployment(&cfg)?;
            let state = dep.rules();
            let v = &state.versions;
            println!(
                "ok: {} features ({}), {} rules ({}, lists {}), {} model(s) ({})",
                dep.features.len(),
                v.feature_set,
                state.rules.rule_count(),
                v.rule_set,
                v.lists,
                state.models.models.len(),
                v.model
            );
            let warnings = state.rules.warnings();
            if !warnings.0.is_empty() {
                print!("{}", warnings.render());
            }
            if keys.is_none() {
                println!("note: no key file at {}; serve and replay will need one", cfg.pii.key_file.display());
            }
        }
        Command::Features { command: FeaturesCommand::Explain { input, event_id, limit, json } } => {
            let cfg = load_config(&cli.config)?;
            let keys = load_keys(&cfg)?;
            let set = load_features(&cfg)?;
            let state_key = riskd_pipeline::pipeline::state_key(&keys);
            let decoder = riskd_core::Decoder::new(
                riskd_core::Limits { max_event_bytes: cfg.engine.max_event_bytes, ..riskd_core::Limits::default() },
                keys,
            );
            let recorded =
                riskd_pipeline::replay::Recorded::read(riskd_pipeline::replay::open_input(&input)?)?.into_file_order();
            let ex = riskd_pipeline::explain::explain(set, &decoder, state_key, || recorded.iter(), &event_id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ex)?);
            } else {
                print!("{}", render_explanation(&ex, limit));
            }
            if ex.features.iter().any(|f| !f.agrees()) {
                eprintln!("warning: the engine and the recomputation disagree on a feature (marked `!`)");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Rules { command: RulesCommand::Test } => {
            let cfg = load_config(&cli.config)?;
            let dep = load_deployment(&cfg)?;
            let report = riskd_rules::run_tests(&dep.rules().rules, &dep.schema, &cfg.engine.rules_dir.join("tests"))
                .map_err(|d| anyhow::anyhow!("{}", d.render()))?;
            print!("{}", report.render());
            if report.failed() > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Replay { input, out, dead_letters, checkpoint_dir, checkpoint_every } => {
            use riskd_pipeline::replay::{ReplayCheckpoints, Start};
            let cfg = load_config(&cli.config)?;
            let keys = load_keys(&cfg)?;
            let dep = Arc::new(load_deployment(&cfg)?);
            let mut pipeline = Pipeline::new(dep.clone(), keys, &cfg.engine)?;
            let dl_path = dead_letters.unwrap_or_else(|| {
                if out.as_os_str() == "-" {
                    PathBuf::from("dead-letters.jsonl")
                } else {
                    out.with_extension("dead-letters.jsonl")
                }
            });
            let store = checkpoint_dir.as_ref().map(riskd_pipeline::CheckpointStore::new);
            let mut start = Start::default();
            if let Some(store) = &store {
                if out.as_os_str() == "-" {
                    bail!("--checkpoint-dir needs --out FILE: standard output cannot be resumed");
                }
                if let Some(meta) = pipeline.restore_checkpoint(store)? {
                    let Some(at) = meta.replay else {
                        bail!(
                            "{} holds a serve checkpoint, not a replay one: use another --checkpoint-dir",
                            store.path().display()
                        );
                    };
                    if at.input != input.display().to_string() {
                        bail!(
                            "{} belongs to a replay of {}, not {}: use another --checkpoint-dir or remove it",
                            store.path().display(),
                            at.input,
                            input.display()
                        );
                    }
                    for (path, len) in [(&out, at.decisions_bytes), (&dl_path, at.dead_letters_bytes)] {
                        let f = std::fs::OpenOptions::new().write(true).open(path).with_context(|| {
                            format!("{}: resuming needs the outputs of the interrupted replay", path.display())
                        })?;
                        if f.metadata()?.len() < len {
                            bail!("{} is shorter than the checkpoint says ({len} bytes): it is not the interrupted replay's output", path.display());
                        }
                        f.set_len(len)?;
                    }
                    start = Start {
                        position: riskd_pipeline::replay::Position { line: at.line, next_offset: at.input_offset },
                        decisions_bytes: at.decisions_bytes,
                        dead_letters_bytes: at.dead_letters_bytes,
                    };
                    eprintln!(
                        "resuming {} after line {} (checkpoint of {})",
                        input.display(),
                        at.line,
                        meta.written_at
                    );
                }
            }
            let open = |path: &Path| -> Result<std::fs::File> {
                let mut o = std::fs::OpenOptions::new();
                if start.position.line > 0 {
                    o.append(true)
                } else {
                    o.write(true).create(true).truncate(true)
                };
                o.open(path).with_context(|| format!("{}", path.display()))
            };
            let mut dl = std::io::BufWriter::new(open(&dl_path)?);
            let mut sink: Box<dyn std::io::Write + Send> = if out.as_os_str() == "-" {
                Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::with_capacity(1 << 20, open(&out)?))
            };
            let checkpoints = store.as_ref().map(|store| ReplayCheckpoints {
                store,
                every: checkpoint_every,
                input: input.display().to_string(),
                feature_set: dep.features.version.clone(),
            });
            let summary = riskd_pipeline::replay::replay_from(
                &mut pipeline,
                &input,
                &mut sink,
                &mut dl,
                |done| eprintln!("replay: {done} inputs"),
                start,
                checkpoints,
            )?;
            if let Some(store) = &store {
                // Complete: nothing to resume.
                let _ = std::fs::remove_file(store.path());
            }
            eprint!("{}", summary.render());
            eprintln!("dead letters written to {}", dl_path.display());
        }
        Command::Backtest {
            input,
            labels,
            out_dir,
            baseline,
            candidate,
            candidate_rules,
            candidate_features,
            candidate_models,
            decisions,
            reason_codes,
        } => {
            let base_cfg = match &baseline {
                Some(path) => Config::load(Some(path), std::env::vars())?,
                None => load_config(&cli.config)?,
            };
            let mut cand_cfg = match &candidate {
                Some(path) => Config::load(Some(path), std::env::vars())?,
                None => base_cfg.clone(),
            };
            if let Some(dir) = candidate_rules {
                cand_cfg.engine.rules_dir = dir;
            }
            if let Some(dir) = candidate_features {
                cand_cfg.engine.features_dir = dir;
            }
            if !candidate_models.is_empty() {
                cand_cfg.engine.models = candidate_models;
            }
            if cand_cfg.engine == base_cfg.engine {
                eprintln!("note: the candidate configuration is the baseline's; nothing can change");
            }
            let keys = load_keys(&base_cfg)?;
            let opts =
                riskd_backtest::Options { input, labels, out_dir, decisions, reason_codes: reason_codes || decisions };
            // On a terminal the progress line is rewritten in place; in a log, one line per report.
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let finished =
                riskd_backtest::backtest([&base_cfg.engine, &cand_cfg.engine], &keys, &opts, |n, elapsed| {
                    let rate = n as f64 / elapsed.as_secs_f64().max(1e-9);
                    if tty {
                        eprint!("\rbacktest: {n} inputs, {rate:.0} events/s   ");
                    } else {
                        eprintln!("backtest: {n} inputs, {rate:.0} events/s");
                    }
                })?;
            if tty && finished.elapsed.as_secs() >= 1 {
                eprintln!();
            }
            print!("{}", riskd_backtest::render_summary(&finished));
            println!("report: {}", opts.out_dir.join("report.html").display());
        }
        Command::Train { events, labels, model_dir, holdout, params } => {
            let cfg = load_config(&cli.config)?;
            let keys = load_keys(&cfg)?;
            let features = load_features(&cfg)?;
            let params: serde_json::Value = serde_json::from_str(&params).context("--params must be a JSON object")?;
            let opts = riskd_pipeline::train::TrainOptions { events, labels, model_dir, holdout, params };
            let report = riskd_pipeline::train::train(&opts, features, keys)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::DeadLetters { command: DeadLetterCommand::Decrypt { file } } => {
            let cfg = load_config(&cli.config)?;
            let keys = load_keys(&cfg)?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let dl: riskd_core::DeadLetter = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a dead-letter record", file.display(), i + 1))?;
                let bytes = keys.open(&dl.original).with_context(|| format!("{}:{}", file.display(), i + 1))?;
                println!("{}\t{}\t{}", dl.dead_letter_id, dl.reason, String::from_utf8_lossy(&bytes));
            }
        }
        Command::Serve => {
            let cfg = load_config(&cli.config)?;
            let keys = load_keys(&cfg)?;
            let dep = Arc::new(load_deployment(&cfg)?);
            // The recorder must exist before the pipeline registers its metric handles.
            let metrics = if cfg.http.listen.is_empty() {
                None
            } else {
                Some(riskd_kafka::ops::install_metrics().map_err(anyhow::Error::msg)?)
            };
            let pipeline = Pipeline::new(dep.clone(), keys, &cfg.engine)?;
            let rt = tokio::runtime::Runtime::new()?;
            let env_token = std::env::var(ADMIN_TOKEN_ENV).ok();
            let token = AdminToken::resolve(env_token.as_deref(), &cfg.http.admin_token_file)?;
            rt.block_on(async {
                let ready = Arc::new(AtomicBool::new(false));
                let status = riskd_kafka::reload::Statuses::default();
                let (reload_requests, reload_inbox) = riskd_kafka::reload::reload_channel();
                if let Some(handle) = metrics {
                    let addr = cfg.http.listen.parse()?;
                    let (d, st) = (dep.clone(), status.clone());
                    let status_fn: riskd_kafka::ops::StatusFn =
                        Arc::new(move || riskd_kafka::reload::status_json(&d, &st));
                    if token.is_none() {
                        tracing::warn!(
                            token_file = %cfg.http.admin_token_file.display(),
                            "no admin token configured: /status and /admin/reload are off"
                        );
                    }
                    let admin = riskd_kafka::ops::Admin { token, reload: Some(reload_requests) };
                    let bound = riskd_kafka::ops::serve_http(addr, handle, ready.clone(), status_fn, admin, shutdown_signal())
                        .await?;
                    tracing::info!(%bound, "ops endpoints: /metrics /healthz /readyz; admin: /status, POST /admin/reload");
                }
                use riskd_kafka::reload::{watch, Watched};
                let every = |ms: u64| (ms > 0).then(|| std::time::Duration::from_millis(ms));
                let (rules_every, models_every) =
                    (every(cfg.engine.rules_reload_interval_ms), every(cfg.engine.models_reload_interval_ms));
                tokio::spawn(watch(dep.clone(), Watched::Rules, rules_every, status.rules, Some(reload_inbox), shutdown_signal()));
                tokio::spawn(watch(dep, Watched::Models, models_every, status.models, None, shutdown_signal()));
                let checkpoints =
                    (!cfg.engine.state_dir.as_os_str().is_empty()).then(|| riskd_kafka::serve::Checkpointing {
                        store: riskd_pipeline::CheckpointStore::new(&cfg.engine.state_dir),
                        interval: std::time::Duration::from_millis(cfg.engine.checkpoint_interval_ms.max(1)),
                    });
                riskd_kafka::serve::run(&cfg.kafka, pipeline, checkpoints, ready, shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Loadtest(args) => {
            let cfg = load_config(&cli.config)?;
            let rt = tokio::runtime::Runtime::new()?;
            if args.pass_through_worker {
                rt.block_on(riskd_kafka::loadtest::pass_through(&cfg.kafka, shutdown_signal()))?;
            } else if !rt.block_on(riskd_kafka::loadtest::run(cfg, cli.config.clone(), args))? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Demo(args) => {
            let cfg = load_config(&cli.config)?;
            let rt = tokio::runtime::Runtime::new()?;
            let ok = rt.block_on(riskd_kafka::demo::run(cfg, args))?;
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render_explanation(ex: &riskd_pipeline::explain::Explanation, limit: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "event {} ({}, {}), line {}, after {} earlier events{}",
        ex.event_id,
        ex.event_type,
        ex.event_time,
        ex.line,
        ex.events_before,
        if ex.late { "; LATE: older than the allowed lateness, values may undercount" } else { "" }
    );
    for f in &ex.features {
        let value = f.value.map_or("missing".to_string(), |v| format!("{v}"));
        let mark = if f.agrees() { "" } else { "  ! recomputed differs" };
        let _ = writeln!(s, "\n{} = {value}{mark}", f.name);
        let _ = writeln!(s, "  {} [{}, {}]", f.description, f.entity, f.window);
        if f.window == "per event" {
            continue;
        }
        let n = f.contributors.len();
        let _ = writeln!(s, "  {n} counted event{}", if n == 1 { "" } else { "s" });
        for c in f.contributors.iter().rev().take(limit) {
            let _ = writeln!(s, "    {}  {}  {}", c.event_time, c.event_id, c.event_type);
        }
        if n > limit {
            let _ = writeln!(s, "    ... and {} earlier", n - limit);
        }
    }
    s
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
