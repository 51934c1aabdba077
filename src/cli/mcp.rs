//! `wcp-hall mcp`: the MCP stdio bridge to a running Hall (see `crate::mcp` and README.md,
//! "The MCP bridge").

use std::time::Duration;

use super::daemon::SocketArg;
use super::{CliError, exit};
use crate::mcp::{self, BridgeConfig, RouteDefaults};

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The tenant every tool call acts as (must be one the Hall maps to this process's uid/gid).
    #[arg(long, env = "WCP_TENANT_ID")]
    pub tenant_id: String,
    /// RouteInput env: dev, stage, prod or edge.
    #[arg(long, default_value = "dev")]
    pub env: String,
    /// RouteInput data label: PUBLIC, INTERNAL or RESTRICTED.
    #[arg(long, default_value = "PUBLIC")]
    pub data_label: String,
    /// RouteInput tenant risk: low, medium or high.
    #[arg(long, default_value = "low")]
    pub tenant_risk: String,
    /// RouteInput QoS class: P0 … P3.
    #[arg(long, default_value = "P2")]
    pub qos_class: String,
    /// Worker results larger than this many bytes are replaced by a notice.
    #[arg(long, default_value_t = mcp::DEFAULT_MAX_RESULT_BYTES)]
    pub max_result_bytes: usize,
    /// Keep dotted tool names (cap.hello.greet, wcp.approvals.list); by default dots become
    /// underscores, which every model API accepts.
    #[arg(long)]
    pub dotted_names: bool,
}

/// Runs the bridge until the MCP host closes stdin. Everything it prints goes to stderr.
pub fn run(args: McpArgs) -> Result<u8, CliError> {
    init_logging();
    tracing::info!(
        socket = %args.socket.socket.display(),
        tenant = %args.tenant_id,
        "wcp-hall MCP bridge on stdio"
    );
    let cfg = BridgeConfig {
        socket: args.socket.socket,
        defaults: RouteDefaults {
            tenant_id: args.tenant_id,
            env: args.env,
            data_label: args.data_label,
            tenant_risk: args.tenant_risk,
            qos_class: args.qos_class,
        },
        timeout: Duration::from_secs(args.socket.timeout),
        max_result_bytes: args.max_result_bytes,
        dotted_names: args.dotted_names,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::IOERR, "runtime", e.to_string()))?;
    runtime
        .block_on(mcp::serve_stdio(cfg))
        .map_err(|e| CliError::new(exit::IOERR, "mcp_transport", e.to_string()))?;
    Ok(exit::OK)
}

/// Logs go to stderr only: stdout belongs to the MCP protocol.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wcp_hall=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
