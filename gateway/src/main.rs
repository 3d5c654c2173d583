//! `mcp-gateway`: the binary. Parses the CLI, loads and validates the config, builds
//! the Pingora server and runs it.

/// mimalloc instead of glibc's malloc: requests allocate on one worker thread and are
/// freed on another, which glibc serialises on its arenas' locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mcp_gateway::audit::Auditor;
use mcp_gateway::auth::bearer::Authenticator;
use mcp_gateway::config::{expand_refs, Config};
use mcp_gateway::connections::ConnectionCap;
use mcp_gateway::drain::{Drain, DrainSignal};
use mcp_gateway::mcp::handler::Gateway;
use mcp_gateway::mcp::session::Sealer;
use mcp_gateway::metrics;
use mcp_gateway::proxy::GatewayProxy;
use mcp_gateway::secrets::SecretStore;
use mcp_gateway::services::{Announce, AuditFlush, Probes, SecretRefresh};
use mcp_gateway::upstream::http::build_client;
use mcp_gateway::upstream::stdio;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

/// Seconds of Pingora's grace period after the drain window (when no YAML sets it):
/// for the requests read at the very end of the window.
const GRACE_AFTER_DRAIN_S: u64 = 5;

/// One MCP endpoint in front of many MCP servers.
#[derive(Parser, Debug)]
#[command(name = "mcp-gateway", version, about)]
struct Cli {
    /// Gateway configuration (TOML). Default: `ops/config/$CONFIG_ENV.toml`, with
    /// CONFIG_ENV defaulting to `development`.
    #[arg(long, env = "MCP_GATEWAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Pingora's own flags: -c pingora.yaml, -t (validate and exit), -d, -u.
    #[command(flatten)]
    pingora: Opt,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Read the audit log: `audit tail`, `audit stats`.
    Audit(mcp_gateway::audit::AuditCliArgs),
}

/// `mcp-gateway audit …`: secrets referenced by the config are loaded first, outside
/// any runtime, so the reader can resolve them synchronously.
fn audit_command(args: mcp_gateway::audit::AuditCliArgs) -> ExitCode {
    let secrets = match args.config.as_deref().map(load_secrets).transpose() {
        Ok(s) => s.flatten(),
        Err(e) => {
            eprintln!("mcp-gateway audit: {e:#}");
            return ExitCode::from(2);
        }
    };
    let expand = |v: &str| -> anyhow::Result<String> {
        let env = |n: &str| std::env::var(n).ok();
        let secret = |r: &str| -> Result<String, String> {
            match &secrets {
                Some(s) => s.store.resolve(r).map_err(|e| e.to_string()),
                None => Err("no secret store is configured".into()),
            }
        };
        expand_refs(v, &env, &secret).map_err(|m| anyhow::anyhow!(m))
    };
    match mcp_gateway::audit::cli::run_with(args, &expand) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway audit: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    // Re-executed as the guard of a STDIO backend process (see upstream::stdio).
    let mut raw = std::env::args_os();
    if raw.nth(1).as_deref() == Some(std::ffi::OsStr::new(stdio::GUARD_ARG)) {
        let code = stdio::guard_main(raw.collect());
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    if let Some(Command::Audit(args)) = cli.command {
        return audit_command(args);
    }
    let path = cli.config.clone().unwrap_or_else(|| {
        let env = std::env::var("CONFIG_ENV").unwrap_or_else(|_| "development".into());
        PathBuf::from(format!("ops/config/{env}.toml"))
    });
    let secrets = match load_secrets(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::load(&path, secrets.as_ref().map(|s| s.store.as_ref())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match mcp_gateway::telemetry::init(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcp-gateway: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = run(&mut config, cli.pingora, secrets);
    if let Err(e) = &outcome {
        tracing::error!("{e:#}");
        eprintln!("mcp-gateway: {e:#}");
    }
    // The spans of the last requests (a drain's included) are still queued.
    telemetry.shutdown();
    // Pingora's runtimes and the background services' threads are not joined: a stopped
    // server exits here rather than waiting on them.
    std::process::exit(if outcome.is_ok() { 0 } else { 1 })
}

/// The secrets a config refers to, loaded before the config is validated.
struct LoadedSecrets {
    store: Arc<SecretStore>,
    names: std::collections::BTreeSet<String>,
    /// Keeps the AWS client's connection tasks alive.
    _runtime: tokio::runtime::Runtime,
}

fn load_secrets(path: &std::path::Path) -> anyhow::Result<Option<LoadedSecrets>> {
    let text = Config::read(path)?;
    let names = config_refs::config_references(&text);
    if names.is_empty() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let store = runtime.block_on(async {
        let store = SecretStore::connect().await;
        store.load(&names).await.map(|_| store)
    })?;
    Ok(Some(LoadedSecrets {
        store: Arc::new(store),
        names,
        _runtime: runtime,
    }))
}

/// The key sealing session ids: the configured one, or a random one (with a warning:
/// sessions then end with the process and other replicas cannot serve them).
fn session_key(config: &Config) -> [u8; 32] {
    match config.server.session_key {
        Some(k) => k,
        None => {
            tracing::warn!(
                "server.session_key is not set: using a random key, so sessions end when this \
                 process stops and other replicas cannot serve them"
            );
            Sealer::random_key()
        }
    }
}

/// Starts the audit log when enabled; the writer runs on a thread of its own, this
/// runtime only starts it.
fn start_auditor(config: &Config) -> anyhow::Result<Option<Arc<Auditor>>> {
    if !config.audit.enabled {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(Some(rt.block_on(Auditor::start(config.audit.clone()))?))
}

/// Pingora's threads and shutdown times when no YAML file sets them, and a warning when
/// its grace period would cut the requests read at the end of the drain window.
fn set_lifetimes(server: &mut Server, has_yaml: bool, drain: std::time::Duration) {
    if !has_yaml {
        // Without a YAML file Pingora would use one thread and a 300 s grace period on
        // SIGTERM; a container platform kills long before that. The grace period holds
        // the drain window and then lets the requests read in it finish.
        if let Some(conf) = std::sync::Arc::get_mut(&mut server.configuration) {
            conf.threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            conf.grace_period_seconds = Some(drain.as_secs() + GRACE_AFTER_DRAIN_S);
            conf.graceful_shutdown_timeout_seconds = Some(5);
        }
    }
    let grace = server.configuration.grace_period_seconds.unwrap_or(300);
    if grace <= drain.as_secs() {
        tracing::warn!(
            grace_period_seconds = grace,
            drain_s = drain.as_secs(),
            "Pingora's grace_period_seconds does not exceed server.drain_s: requests read at \
             the end of the drain window are cut when the grace period ends"
        );
    }
}

fn run(config: &mut Config, opt: Opt, secrets: Option<LoadedSecrets>) -> anyhow::Result<()> {
    let validate_only = opt.test;
    let has_yaml = opt.conf.is_some();
    let mut server = Server::new(Some(opt))?;
    let lifetimes = config.server.lifetimes;
    set_lifetimes(&mut server, has_yaml, lifetimes.drain);
    server.bootstrap();
    if validate_only {
        return Ok(());
    }
    // Port 0: a free port picked now, so that it can be announced.
    config.take_ephemeral_ports()?;
    let key = session_key(config);
    let config = Arc::new(config.clone());
    let client = build_client()?;
    let auditor = start_auditor(&config)?;
    let sink = auditor
        .clone()
        .map(|a| a as Arc<dyn mcp_gateway::record::AuditSink>);
    let gateway = Arc::new(Gateway::new(config.clone(), client.clone(), key, sink));
    let auth = Arc::new(Authenticator::new(&config.auth, client));
    let drain = Drain::new(lifetimes);
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy {
            gateway: gateway.clone(),
            auth: auth.clone(),
            drain: drain.clone(),
        },
    );
    let mut proxy = pingora::services::listening::Service::new(
        "MCP gateway".to_string(),
        ConnectionCap::new(proxy, config.server.max_connections, drain.clone()),
    );
    proxy.add_tcp(&config.server.listen.to_string());
    server.add_service(proxy);
    if let Some(a) = &auditor {
        server.add_service(background_service(
            "audit flush",
            AuditFlush { auditor: a.clone() },
        ));
    }
    if let Some(s) = &secrets {
        let every = config.server.secrets_refresh;
        server.add_service(background_service(
            "secret refresh",
            SecretRefresh {
                store: s.store.clone(),
                names: s.names.clone(),
                gateway: gateway.clone(),
                every,
            },
        ));
    }
    if let Some(addr) = config.metrics_listen {
        metrics::requests();
        metrics::StateCollector::register(gateway.clone(), Some(auth.clone()), auditor.clone());
        server.add_service(mcp_gateway::admin::service(
            gateway.clone(),
            auth.clone(),
            addr,
        ));
    }
    server.add_service(background_service(
        "health probes",
        Probes {
            gateway,
            auth: Some(auth),
        },
    ));
    // Announced once each listener takes connections (Pingora binds them as it starts
    // its services, after this): whoever reads "listening on" can connect at once.
    let mut lines = Vec::new();
    if let Some(addr) = config.metrics_listen {
        lines.push((addr, format!("metrics on http://{addr}/metrics")));
    }
    let listen = config.server.listen;
    lines.push((listen, format!("listening on http://{listen}/mcp")));
    server.add_service(background_service("announce", Announce { lines }));
    tracing::info!(
        listen = %config.server.listen,
        backends = config.backends.len(),
        "mcp-gateway starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainSignal { drain }),
    });
    Ok(())
}
