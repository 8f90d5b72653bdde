//! turmoil's simulated network as a [`Transport`]: every host of a turmoil simulation runs the
//! real view leader, servers or clients, and their connections are turmoil's TCP, which the
//! simulation can partition, hold, delay, and cut by crashing or restarting a host.
//!
//! A host listens on its own name (`server1:38000`): turmoil binds every listener to the host's
//! address whatever name it is given, and resolves host names when connecting.

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::net::{Conn, Listener, Transport};

/// The network of the turmoil host whose software is running.
pub struct TurmoilTransport;

impl Transport for TurmoilTransport {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr)
                .await
                .map_err(|err| Error::Unreachable(format!("cannot connect to {addr}: {err}")))?;
            Ok(Box::new(stream) as Conn)
        })
    }

    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .ok_or_else(|| Error::InvalidRequest(format!("bad address {addr:?}")))?;
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(|err| Error::Unreachable(format!("cannot listen on {addr}: {err}")))?;
            Ok(Box::new(TurmoilListener {
                listener,
                name: addr.to_string(),
            }) as Box<dyn Listener>)
        })
    }
}

struct TurmoilListener {
    listener: turmoil::net::TcpListener,
    /// The name peers reach it by (`host:port`).
    name: String,
}

impl Listener for TurmoilListener {
    fn accept(&self) -> BoxFuture<'_, std::io::Result<(Conn, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            Ok((Box::new(stream) as Conn, peer.to_string()))
        })
    }

    fn local_addr(&self) -> Result<String> {
        Ok(self.name.clone())
    }
}
