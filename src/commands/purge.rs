//! `edgebox purge (--url|--prefix|--tag|--all) [--soft]`: purge on every edge at once.

use std::process::ExitCode;

use edgebox_config::TokenRole;
use edgebox_wire::control_plane::{PurgeRequest, PurgeResponse};
use reqwest::Method;

use super::cp_client::{Client, ClientArgs, or_dash, table};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false)))]
pub struct Args {
    /// One URL path (all its variants), e.g. /index.html.
    #[arg(long, group = "what")]
    pub url: Option<String>,
    /// Every cached path starting with this prefix, e.g. /assets/.
    #[arg(long, group = "what")]
    pub prefix: Option<String>,
    /// Every object carrying this Surrogate-Key tag.
    #[arg(long, group = "what")]
    pub tag: Option<String>,
    /// Everything.
    #[arg(long, group = "what")]
    pub all: bool,
    /// Mark the objects stale instead of removing them: the next request revalidates
    /// with the origin (a 304 keeps the body), and stale-while-revalidate /
    /// stale-if-error still serve clients meanwhile.
    #[arg(long)]
    pub soft: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client, TokenRole::Operator)?;
    let request = PurgeRequest {
        url: args.url,
        prefix: args.prefix,
        tag: args.tag,
        all: args.all.then_some(true),
        soft: args.soft,
    };
    // 207 (some edges failed) is a 2xx: the per-edge results say which.
    let response: PurgeResponse = client.call(Method::POST, "/v1/purge", Some(&request))?;
    client.output(&response, |response| {
        let rows: Vec<Vec<String>> = response
            .results
            .iter()
            .map(|r| {
                vec![
                    r.node.clone(),
                    if r.ok { "ok".into() } else { "FAILED".into() },
                    or_dash(r.purged.map(|n| n.to_string())),
                    format!("{}ms", r.elapsed_ms),
                    or_dash(r.error.clone()),
                ]
            })
            .collect();
        table(&["EDGE", "RESULT", "PURGED", "TIME", "ERROR"], &rows);
    });
    Ok(if response.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
