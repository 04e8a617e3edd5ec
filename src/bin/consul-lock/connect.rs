//! The Consul client: the consul CLI's environment variables, then the flags on top.

use consul_lock::{Client, ClientBuilder};

use crate::cli::ConnArgs;
use crate::exit::Failure;

/// Build the client from the environment, overridden by the flags given. A budget of two
/// connections: the agent's cap of connections per client address is shared by every process of
/// the host. A waiting `consul-lock run` uses one (its renewals carried between its blocking
/// queries, closed after each); a holder adds the kept connection of its renewals and release.
pub(crate) fn client(args: &ConnArgs, code: i32) -> Result<Client, Failure> {
    let invalid = |e: consul_lock::Error| {
        Failure::from_lib(code, &e, args.http_addr.as_deref().unwrap_or("the configured address"))
    };
    let mut b = ClientBuilder::from_env().map_err(invalid)?;
    if let Some(a) = &args.http_addr {
        b = b.address(a.clone());
    }
    if let Some(t) = &args.token {
        b = b.token(t.clone());
    } else if let Some(path) = &args.token_file {
        // Read it here so that the flag wins over a CONSUL_HTTP_TOKEN in the environment.
        let t = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(code, format!("cannot read the token file {path:?}: {e}"))
                .hint("--token-file names a file holding only the ACL token")
        })?;
        b = b.token(t.trim().to_owned());
    }
    if let Some(ca) = &args.ca_file {
        b = b.ca_file(ca.clone());
    }
    if let Some(dc) = &args.datacenter {
        b = b.datacenter(dc.clone());
    }
    b.max_connections(2).build().map_err(invalid)
}
