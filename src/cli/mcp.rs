//! `wcp-hall mcp`: the MCP stdio bridge to a running Hall (see `crate::mcp` and docs/mcp.md).

use std::time::Duration;

use super::daemon::{RouteContextArgs, SocketArg};
use super::{CliError, exit};
use crate::mcp::{self, BridgeConfig, RouteDefaults};

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The route context every tool call is dispatched with; `--tenant-id` (or
    /// `WCP_TENANT_ID`) is required: the tenant every tool call acts as.
    #[command(flatten)]
    pub context: RouteContextArgs,
    /// Worker results larger than this many bytes are replaced by a notice.
    #[arg(long, default_value_t = mcp::DEFAULT_MAX_RESULT_BYTES)]
    pub max_result_bytes: usize,
    /// Keep dotted tool names (cap.hello.greet, wcp.approvals.list); by default dots become
    /// underscores, which every model API accepts.
    #[arg(long)]
    pub dotted_names: bool,
    /// How many seconds a call that needs a human approval is kept open waiting for the
    /// operator's decision, with progress notifications when the host asks for them; then it
    /// answers with the worker's result (or the denial). Past it the call answers
    /// pending_approval with the approval id, which the wcp_approval_outcome tool collects
    /// later. 0 answers pending at once. Keep it under the host's request timeout (many MCP
    /// clients default to 60 s).
    #[arg(long, default_value_t = mcp::DEFAULT_APPROVAL_WAIT.as_secs(), value_name = "SECONDS")]
    pub approval_wait: u64,
}

/// Runs the bridge until the MCP host closes stdin. Everything it prints goes to stderr.
pub fn run(args: McpArgs) -> Result<u8, CliError> {
    let context = args.context;
    let tenant_id = context.tenant_id.ok_or_else(|| {
        CliError::new(
            exit::USAGE,
            "usage",
            "give --tenant-id (or WCP_TENANT_ID): the tenant every tool call acts as",
        )
    })?;
    init_logging();
    tracing::info!(
        socket = %args.socket.socket.display(),
        tenant = %tenant_id,
        "wcp-hall MCP bridge on stdio"
    );
    let cfg = BridgeConfig {
        socket: args.socket.socket,
        defaults: RouteDefaults {
            tenant_id,
            env: context.env,
            data_label: context.data_label,
            tenant_risk: context.tenant_risk,
            qos_class: context.qos_class,
        },
        timeout: Duration::from_secs(args.socket.timeout),
        max_result_bytes: args.max_result_bytes,
        dotted_names: args.dotted_names,
        approval_wait: Duration::from_secs(args.approval_wait),
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rmcp=error,wcp_hall=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
