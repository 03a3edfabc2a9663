//! The proxy's lifecycle: load TLS, bind listeners, install interception, then (and only
//! then) remove the deny table and report ready; serve; drain on shutdown.
//!
//! Every startup step holds a readiness token. Any failure before the last token is gone
//! returns an error: the deny table is never touched, so the pod stays closed.

use crate::{
    admin::{self, AdminState},
    conn::{Shared, Timeouts},
    egress,
    event_loops::{Registered, Service, Threads},
    ingress,
    limits::Limits,
    metrics::Route,
    readiness::Readiness,
    reload::{Fingerprint, Reloader},
    rotation::Rotation,
    sockopt, tls,
};
use crate::{
    config::{EgressIdentity, IdentityRule},
    identity::{EgressRule, IngressRule, Rules},
};
use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

/// Knobs of the proxy (flags of `podmesh proxy`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    pub tls_dir: PathBuf,
    /// Transparent mTLS listener port.
    pub mtls_port: u16,
    /// Transparent TLS-only listener port (`#false` entries).
    pub tls_port: u16,
    /// fwmark set on intercepted packets (policy routing).
    pub tproxy_mark: u32,
    /// Routing table of the `local` default route.
    pub route_table: u32,
    /// `SO_MARK` of upstream sockets; must differ from `tproxy_mark` (0 = none).
    pub upstream_mark: u32,
    pub timeouts: Timeouts,
    pub max_connections: u32,
    /// Ingress connections still in their TLS handshake (not authenticated yet), in total
    /// and per source address (IPv6: per /64); see [`crate::limits`].
    pub max_handshakes: u32,
    pub max_handshakes_per_source: u32,
    /// How long SIGTERM waits for open connections.
    pub drain_timeout: Duration,
    /// How often the tls dir is checked for new material.
    pub reload_interval: Duration,
    /// After a new mesh CA appears: how long the old one stays trusted and connections made
    /// under it stay open (see [`crate::rotation`]).
    pub rotation_grace: Duration,
    /// Network namespace for nft/ip operations (tests); `None` = our own.
    pub netns: Option<String>,
    /// Session resumption and TLS 1.3 suites.
    pub tls: tls::TlsPolicy,
    /// Threads serving connections, each its own event loop (see [`crate::event_loops`]).
    pub threads: usize,
}

/// The defaults of [`Options`], which are also the defaults of `podmesh proxy`'s flags.
pub mod defaults {
    use std::time::Duration;
    pub const MTLS_PORT: u16 = 15006;
    pub const TLS_PORT: u16 = 15007;
    pub const TPROXY_MARK: u32 = 0x1;
    pub const ROUTE_TABLE: u32 = 100;
    pub const UPSTREAM_MARK: u32 = 0x2;
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const MAX_CONNECTIONS: u32 = 65_536;
    /// `--max-handshakes`: see README "Handshake budget" for the sizing.
    pub const MAX_HANDSHAKES: u32 = 1024;
    pub const MAX_HANDSHAKES_PER_SOURCE: u32 = 128;
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
    pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
    /// `--rotation-grace`: see README "Manifest updates reach the mesh in seconds".
    pub const ROTATION_GRACE: Duration = Duration::from_secs(30);
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls_dir: PathBuf::from(crate::tls_dir::DEFAULT_DIR),
            mtls_port: defaults::MTLS_PORT,
            tls_port: defaults::TLS_PORT,
            tproxy_mark: defaults::TPROXY_MARK,
            route_table: defaults::ROUTE_TABLE,
            upstream_mark: defaults::UPSTREAM_MARK,
            timeouts: Timeouts {
                handshake: defaults::HANDSHAKE_TIMEOUT,
                connect: defaults::CONNECT_TIMEOUT,
                idle: defaults::IDLE_TIMEOUT,
            },
            max_connections: defaults::MAX_CONNECTIONS,
            max_handshakes: defaults::MAX_HANDSHAKES,
            max_handshakes_per_source: defaults::MAX_HANDSHAKES_PER_SOURCE,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            reload_interval: defaults::RELOAD_INTERVAL,
            rotation_grace: defaults::ROTATION_GRACE,
            netns: None,
            tls: tls::TlsPolicy::default(),
            threads: 1,
        }
    }
}

/// What to proxy, resolved from the mesh configuration.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    /// `None` = ingress `DISABLED`: no interception at all.
    pub ingress: Option<IngressPlan>,
    pub egress: Vec<EgressPlan>,
    pub admin_port: Option<u16>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngressPlan {
    /// `#true` entries: plaintext straight to the app.
    pub plaintext: Vec<(String, u16)>,
    /// `#false` entries: TLS without client certificate.
    pub tls_only: Vec<(String, u16)>,
    /// `PODMESH_INGRESS_UDP`: UDP ports open to new inbound flows (all other non-TCP stays out).
    pub udp: Vec<(String, u16)>,
    /// `#mtls` entries (podmesh extension): name, port, allowed identities (empty = any mesh
    /// certificate). Served by the mTLS listener like every unlisted port.
    pub mtls: Vec<(String, u16, Vec<String>)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EgressPlan {
    pub name: String,
    pub listen: SocketAddr,
    pub remote_host: String,
    pub remote_port: u16,
    /// What the server certificate must name (default: `remote_host`).
    pub identity: EgressIdentity,
}

impl Plan {
    /// Resolves the parsed mesh configuration.
    pub fn from_config(config: &crate::config::MeshConfig) -> Self {
        use crate::config::{Ingress, IngressMode};
        let ingress = match &config.ingress {
            Ingress::Disabled => None,
            Ingress::Intercept(entries) => {
                let mut plan = IngressPlan::default();
                for e in entries {
                    match e.mode {
                        IngressMode::Plaintext => plan.plaintext.push((e.name.clone(), e.port)),
                        IngressMode::TlsOnly => plan.tls_only.push((e.name.clone(), e.port)),
                        IngressMode::MutualTls => plan.mtls.push((e.name.clone(), e.port, e.allow.clone())),
                    }
                }
                plan.udp = config.ingress_udp.iter().map(|u| (u.name.clone(), u.port)).collect();
                Some(plan)
            }
        };
        let egress = config
            .egress
            .iter()
            .map(|e| EgressPlan {
                name: e.name.clone(),
                listen: e.listen,
                remote_host: e.remote_host.to_string(),
                remote_port: e.remote_port,
                identity: e.identity.clone(),
            })
            .collect();
        Self { ingress, egress, admin_port: config.admin_port }
    }

    /// The identity rules the TLS configurations enforce.
    pub fn rules(&self) -> Rules {
        let ingress = self
            .ingress
            .iter()
            .flat_map(|i| &i.mtls)
            .filter(|(_, _, allow)| !allow.is_empty())
            .map(|(entry, port, allow)| IngressRule { entry: entry.clone(), port: *port, allow: allow.clone() })
            .collect();
        let egress = self
            .egress
            .iter()
            .map(|e| EgressRule { entry: e.name.clone(), host: e.remote_host.clone(), identity: e.identity.clone() })
            .collect();
        Rules { ingress, egress }
    }

    /// Warnings about identity settings (`#any` egress entries), for the config check and startup.
    pub fn identity_warnings(&self) -> Vec<String> {
        let any = self.egress.iter().filter(|e| e.identity == EgressIdentity::Any);
        any.map(|e| crate::config::any_warning(&e.name, &e.remote_host)).collect()
    }

    /// Who may connect to each intercepted port and whom each egress entry may reach, in
    /// words: what `podmesh config check`, the proxy's start and `/config` show.
    pub fn identity_rules(&self) -> Vec<IdentityRule> {
        let mut rules = Vec::new();
        if let Some(i) = &self.ingress {
            rules.extend(i.mtls.iter().map(|(n, p, allow)| IdentityRule::ingress(Some(n), Some(*p), allow)));
            rules.push(IdentityRule::ingress(None, None, &[]));
        }
        rules.extend(self.egress.iter().map(|e| IdentityRule::egress(&e.name, &e.remote_host, &e.identity)));
        rules
    }
}

/// Why the proxy could not start (or stop cleanly). One line each.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy options: {0}")]
    Options(String),
    #[error("TLS material in {dir} is not usable: {source}")]
    Tls { dir: PathBuf, source: tls::TlsError },
    #[error("{what}: {source}")]
    Listen { what: String, source: sockopt::SockoptError },
    #[error("egress entry {name}: {source}")]
    Egress { name: String, source: tls::TlsError },
    #[error(transparent)]
    Tproxy(Box<firewall::tproxy::TproxyError>),
    #[error("installing the policy routes: {0}")]
    Routes(Box<firewall::routes::RoutesError>),
    #[error("removing the deny table after readiness: {0}")]
    Deny(Box<firewall::deny::DenyError>),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("{0}")]
    EventLoop(String),
}

impl From<firewall::tproxy::TproxyError> for ProxyError {
    fn from(e: firewall::tproxy::TproxyError) -> Self {
        Self::Tproxy(Box::new(e))
    }
}

impl From<firewall::routes::RoutesError> for ProxyError {
    fn from(e: firewall::routes::RoutesError) -> Self {
        Self::Routes(Box::new(e))
    }
}

impl From<firewall::deny::DenyError> for ProxyError {
    fn from(e: firewall::deny::DenyError) -> Self {
        Self::Deny(Box::new(e))
    }
}

impl Options {
    fn check(&self, plan: &Plan) -> Result<(), ProxyError> {
        let bad = |m: String| Err(ProxyError::Options(m));
        if self.upstream_mark != 0 && self.upstream_mark == self.tproxy_mark {
            return bad(format!(
                "--upstream-mark {:#x} equals --tproxy-mark: upstream connections would be routed to the local table and fail",
                self.upstream_mark
            ));
        }
        if self.mtls_port == self.tls_port {
            return bad(format!("--mtls-port and --tls-port are both {}", self.mtls_port));
        }
        if let Some(admin) = plan.admin_port {
            if admin == self.mtls_port || admin == self.tls_port {
                return bad(format!("admin port {admin} collides with a proxy listener port"));
            }
        }
        if let Some(ingress) = &plan.ingress {
            let mtls = ingress.mtls.iter().map(|(name, port, _)| (name.clone(), *port));
            for (name, port) in ingress.plaintext.iter().chain(&ingress.tls_only).cloned().chain(mtls) {
                let (name, port) = (&name, &port);
                if *port == self.mtls_port || *port == self.tls_port {
                    return bad(format!("ingress entry {name}: port {port} is a proxy listener port"));
                }
                if Some(*port) == plan.admin_port {
                    return bad(format!("ingress entry {name}: port {port} is the admin port"));
                }
            }
        }
        let t = &self.timeouts;
        if [t.handshake, t.connect, t.idle, self.reload_interval, self.rotation_grace].iter().any(Duration::is_zero) {
            return bad("timeouts, the reload interval and the rotation grace must be greater than zero".into());
        }
        if self.max_connections == 0 {
            return bad("--max-connections must be at least 1".into());
        }
        if self.max_handshakes == 0 || self.max_handshakes_per_source == 0 {
            return bad("--max-handshakes and --max-handshakes-per-source must be at least 1".into());
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad(format!("--worker-threads must be between 1 and {MAX_THREADS}, not {}", self.threads));
        }
        Ok(())
    }
}

/// Runs the proxy until `shutdown` resolves, then drains: [`start`], open the pod (remove
/// the deny table), `on_ready` (the caller sends `READY=1`), serve, [`Running::drain`].
pub async fn run(
    plan: Plan,
    opts: Options,
    config_json: String,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(),
) -> Result<(), ProxyError> {
    let mut running = start(plan, opts, config_json).await?;
    let removed = running.open_pod().await?;
    on_ready();
    running.serve(removed);
    shutdown.await;
    running.drain().await;
    Ok(())
}

/// A started proxy: every listener bound and registered on every event loop, interception
/// installed, accepting. The pod is still closed until [`Running::open_pod`].
pub struct Running {
    plan: Plan,
    opts: Options,
    limits: Limits,
    tasks: tokio::task::JoinSet<()>,
    threads: Threads,
    reloader: Option<Reloader>,
}

/// Startup: TLS material, listeners, event loops, interception. Any error returns before
/// the deny table is touched, so the pod stays closed.
pub async fn start(plan: Plan, opts: Options, config_json: String) -> Result<Running, ProxyError> {
    opts.check(&plan)?;
    let netns = opts.netns.clone();
    let readiness = Readiness::new();
    let tls_token = readiness.token("tls material");
    let rules_token = plan.ingress.as_ref().map(|_| readiness.token("interception rules"));
    let limits = Limits::new(opts.max_connections, opts.max_handshakes, opts.max_handshakes_per_source);

    // Routes (metrics) are fixed up front.
    let mtls_route = Arc::new(Route::new("mtls", "ingress_mtls"));
    let tls_routes: Vec<(u16, Arc<Route>)> = plan
        .ingress
        .iter()
        .flat_map(|i| &i.tls_only)
        .map(|(name, port)| (*port, Arc::new(Route::new(name.clone(), "ingress_tls"))))
        .collect();
    let mtls_routes: Vec<(u16, Arc<Route>)> = plan
        .ingress
        .iter()
        .flat_map(|i| &i.mtls)
        .map(|(name, port, _)| (*port, Arc::new(Route::new(name.clone(), "ingress_mtls"))))
        .collect();
    let egress_routes: Vec<Arc<Route>> =
        plan.egress.iter().map(|e| Arc::new(Route::new(e.name.clone(), "egress"))).collect();
    let mut all_routes = Vec::new();
    if plan.ingress.is_some() {
        all_routes.push(mtls_route.clone());
        all_routes.extend(mtls_routes.iter().map(|(_, r)| r.clone()));
        all_routes.extend(tls_routes.iter().map(|(_, r)| r.clone()));
    }
    all_routes.extend(egress_routes.iter().cloned());

    // The admin listener comes first, so /ready can tell what startup is waiting for.
    let rotation_stats = Arc::new(crate::rotation::Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(port) = plan.admin_port {
        let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let what = format!("admin listener on port {port}");
        let listener = bind(sockopt::plain_listener(addr), &what)?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| ProxyError::EventLoop(format!("registering the {what} with the runtime: {e}")))?;
        let state = Arc::new(AdminState {
            readiness: readiness.clone(),
            routes: all_routes.clone(),
            config_json,
            rotation: rotation_stats.clone(),
        });
        let limits = limits.clone();
        tasks.spawn(async move { admin::serve(listener, state, async move { limits.stopped().await }).await });
    }

    // Who may talk to whom: said once at startup, enforced by the TLS configurations.
    for rule in plan.identity_rules() {
        tracing::info!(PODMESH_EVENT = "identity_rule", "{rule}");
    }
    for warning in plan.identity_warnings() {
        tracing::warn!(PODMESH_EVENT = "egress_identity_any", "{warning}");
    }
    let rules = Arc::new(plan.rules());

    // TLS material: loaded and verified before anything can accept a connection.
    let (dir, policy, r) = (opts.tls_dir.clone(), opts.tls.clone(), rules.clone());
    let grace = opts.rotation_grace;
    let stats = rotation_stats.clone();
    let (seen, loaded) = tokio::task::spawn_blocking(move || {
        let seen = Fingerprint::of(&dir);
        let loaded = tls::Material::read(&dir).and_then(|m| {
            let (rotation, retirement) = Rotation::new(&dir, policy.clone(), r.clone(), grace, &m, stats);
            let configs = tls::TlsConfigs::from_material(&dir, m, rustls_pki_types::UnixTime::now(), &policy, &r)?;
            Ok((rotation, retirement, configs))
        });
        (seen, loaded)
    })
    .await
    .map_err(|e| ProxyError::Task(e.to_string()))?;
    let (rotation, retirement, configs) =
        loaded.map_err(|source| ProxyError::Tls { dir: opts.tls_dir.clone(), source })?;
    tracing::info!(
        PODMESH_EVENT = "tls_loaded",
        "TLS material from {} verified against the mesh CA ({})",
        opts.tls_dir.display(),
        configs.summary
    );
    let (reloader, tls_watch) = Reloader::new(opts.tls_dir.clone(), seen, rotation, configs);
    drop(tls_token);

    let mut own_ports = vec![opts.mtls_port, opts.tls_port];
    own_ports.extend(plan.admin_port);
    let shared = Arc::new(Shared {
        tls: tls_watch,
        limits: limits.clone(),
        timeouts: opts.timeouts,
        upstream_mark: opts.upstream_mark,
        own_ports,
        local: crate::local::LocalCheck::new(),
        retirement,
    });

    // Listeners: bound now (a port in use fails startup), served once ready.
    let mut ports: Vec<u16> = plan.egress.iter().map(|e| e.listen.port()).chain(plan.admin_port).collect();
    if plan.ingress.is_some() {
        ports.extend([opts.mtls_port, opts.tls_port]);
    }
    crate::ephemeral_ports::warn_on_clash(&ports);
    // (Binding is synchronous: no readiness token per listener, nothing could observe it.)
    let ingress_service = |port: u16, proto: &str, kind: ingress::Listener| -> Result<Service, ProxyError> {
        let what = format!("{proto} listener on port {port}");
        let l = bind(sockopt::transparent_listener(port), &what)?;
        let (sh, kind) = (shared.clone(), Arc::new(kind));
        Ok(Service::new(what, l, move |l| ingress::serve(l, kind.clone(), sh.clone())))
    };
    let mut services = Vec::new();
    if plan.ingress.is_some() {
        services.push(ingress_service(
            opts.mtls_port,
            "mTLS",
            ingress::Listener::Mtls { route: mtls_route.clone(), entries: mtls_routes.clone() },
        )?);
        if !tls_routes.is_empty() {
            services.push(ingress_service(
                opts.tls_port,
                "TLS",
                ingress::Listener::TlsOnly { routes: tls_routes.clone() },
            )?);
        }
    }
    for (index, (entry, route)) in plan.egress.iter().zip(&egress_routes).enumerate() {
        let what = format!("egress entry {} listener on {}", entry.name, entry.listen);
        let server_name = tls::server_name(&entry.remote_host)
            .map_err(|source| ProxyError::Egress { name: entry.name.clone(), source })?;
        let l = bind(sockopt::plain_listener(entry.listen), &what)?;
        let target = Arc::new(egress::Target {
            host: entry.remote_host.clone(),
            port: entry.remote_port,
            entry: index,
            server_name,
        });
        let (sh, route) = (shared.clone(), route.clone());
        services.push(Service::new(what, l, move |l| egress::serve(l, target.clone(), route.clone(), sh.clone())));
    }
    // Every event loop holds its own registration of every listener before we get ready.
    let token = readiness.token(format!("{} event loop(s)", opts.threads));
    let mine = Registered::new(&services).map_err(ProxyError::EventLoop)?;
    let threads = Threads::start(opts.threads - 1, &services).await.map_err(ProxyError::EventLoop)?;
    drop(services);
    drop(token);

    // Interception: only after the listeners exist, so no packet is ever steered nowhere
    // while we are up (the deny table still guards the pod until the end of startup).
    if let Some(ingress) = &plan.ingress {
        let mut passthrough: Vec<u16> = ingress.plaintext.iter().map(|(_, p)| *p).collect();
        passthrough.extend(plan.admin_port);
        let spec = firewall::tproxy::Spec {
            mtls_port: opts.mtls_port,
            tls_port: opts.tls_port,
            passthrough_ports: passthrough,
            tls_only_ports: ingress.tls_only.iter().map(|(_, p)| *p).collect(),
            udp_ports: ingress.udp.iter().map(|(_, p)| *p).collect(),
            mark: opts.tproxy_mark,
        };
        let routes = firewall::routes::RouteSpec { mark: opts.tproxy_mark, table: opts.route_table };
        let ns = netns.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ProxyError> {
            firewall::tproxy::install(&spec, ns.as_deref())?;
            firewall::routes::install(routes, ns.as_deref())?;
            Ok(())
        })
        .await
        .map_err(|e| ProxyError::Task(e.to_string()))??;
        tracing::info!(
            PODMESH_EVENT = "tproxy_installed",
            "interception table inet {} and policy routes (mark {:#x}, table {}) installed",
            firewall::tproxy::TABLE,
            opts.tproxy_mark,
            opts.route_table
        );
        drop(rules_token);
    }

    // All tokens are gone: accept (the deny table still keeps the pod closed).
    readiness.wait().await;
    mine.spawn(&mut tasks);
    threads.serve();
    Ok(Running { plan, opts, limits, tasks, threads, reloader: Some(reloader) })
}

impl Running {
    /// Opens the pod (see [`crate::lifecycle::open_pod`]); returns whether the table was there.
    pub async fn open_pod(&self) -> Result<bool, ProxyError> {
        let ns = self.opts.netns.clone();
        tokio::task::spawn_blocking(move || {
            crate::lifecycle::open_pod(ns.as_deref(), "the mesh proxy intercepts every inbound connection")
                .map_err(ProxyError::from)
        })
        .await
        .map_err(|e| ProxyError::Task(e.to_string()))?
    }

    /// Logs `proxy_ready` and starts watching the tls dir for renewed material.
    pub fn serve(&mut self, deny_removed: bool) {
        let (plan, opts) = (&self.plan, &self.opts);
        tracing::info!(
            PODMESH_EVENT = "proxy_ready",
            "proxy ready: ingress {}, {} egress entr{}, deny table {}",
            match &plan.ingress {
                None => "disabled".to_string(),
                Some(i) => format!(
                    "intercepted (mTLS :{}, {} TLS-only, {} plaintext port(s))",
                    opts.mtls_port,
                    i.tls_only.len(),
                    i.plaintext.len()
                ),
            },
            plan.egress.len(),
            if plan.egress.len() == 1 { "y" } else { "ies" },
            if deny_removed { "removed" } else { "was not installed" }
        );
        if let Some(reloader) = self.reloader.take() {
            self.tasks.spawn(reloader.run(opts.reload_interval));
        }
    }

    /// Stops accepting, lets open connections finish for up to `--drain-timeout`, removes
    /// the policy routes. The interception table stays (fail closed).
    pub async fn drain(mut self) {
        let opts = &self.opts;
        tracing::info!(
            PODMESH_EVENT = "proxy_draining",
            "shutdown requested: not accepting, draining {} connection(s) for up to {:?}",
            self.limits.active(),
            opts.drain_timeout
        );
        let left = self.limits.drain(opts.drain_timeout).await;
        self.tasks.abort_all();
        self.threads.stop().await;
        if self.plan.ingress.is_some() {
            // The interception table stays: with the listeners gone it rejects (fail closed)
            // until the next start replaces it. Only the routes go.
            let routes = firewall::routes::RouteSpec { mark: opts.tproxy_mark, table: opts.route_table };
            let ns = opts.netns.clone();
            match tokio::task::spawn_blocking(move || firewall::routes::remove(routes, ns.as_deref())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(PODMESH_EVENT = "routes_remove_failed", "{e}"),
                Err(e) => tracing::warn!(PODMESH_EVENT = "routes_remove_failed", "{e}"),
            }
        }
        tracing::info!(
            PODMESH_EVENT = "proxy_stopped",
            "proxy stopped ({left} connection(s) cut at the drain deadline)"
        );
    }
}

/// Most event-loop threads `--worker-threads` may ask for.
pub const MAX_THREADS: usize = 256;

fn bind(
    r: Result<std::net::TcpListener, sockopt::SockoptError>,
    what: &str,
) -> Result<std::net::TcpListener, ProxyError> {
    r.map_err(|source| ProxyError::Listen { what: what.to_string(), source })
}
