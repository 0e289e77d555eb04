//! The traffic end of `expect` on real namespaces: `calico-sim probe listen|connect`, a hidden
//! subcommand run with `ip netns exec`, so no tool beyond `ping` is needed.
//!
//! - `listen tcp|udp <port>`: binds `[::]:<port>` (both families; `0.0.0.0` where the
//!   namespace has no IPv6), prints [`READY`] once bound, then
//!   answers every TCP connection with `ok` and echoes every UDP datagram, until killed.
//! - `connect tcp|udp <ip> <port>`: exits 0 when the listener answered within the timeout
//!   (TCP: the handshake completed; UDP: the echo came back), 1 otherwise.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// The line a listener prints on stdout once it is bound.
pub const READY: &str = "listening";

/// A probe's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Serves `port` until the process is killed.
///
/// # Errors
/// When the port cannot be bound or stdout is closed.
pub fn listen(transport: Transport, port: u16) -> io::Result<()> {
    // `[::]` also takes IPv4 (as v4-mapped addresses): net.ipv6.bindv6only is 0 by default.
    let any6 = SocketAddr::from(([0u16; 8], port));
    let any4 = SocketAddr::from(([0, 0, 0, 0], port));
    match transport {
        Transport::Tcp => {
            let listener = TcpListener::bind(any6).or_else(|_| TcpListener::bind(any4))?;
            ready()?;
            loop {
                // A connection that fails mid-way is the client's problem, not the listener's.
                if let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.write_all(b"ok\n");
                }
            }
        }
        Transport::Udp => {
            let socket = UdpSocket::bind(any6).or_else(|_| UdpSocket::bind(any4))?;
            ready()?;
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                // The runner stops reading after READY; a closed stdout must not end the echo.
                let _ = writeln!(io::stdout(), "from {from}");
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    }
}

fn ready() -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()
}

/// Tries one connection (TCP) or one datagram and its echo (UDP) to `ip:port`.
/// Returns whether the listener answered within `timeout`.
pub fn connect(transport: Transport, ip: IpAddr, port: u16, timeout: Duration) -> bool {
    let to = SocketAddr::new(ip, port);
    match transport {
        Transport::Tcp => TcpStream::connect_timeout(&to, timeout).is_ok_and(|mut stream| {
            // The handshake proves both directions; reading the greeting proves data flows.
            let _ = stream.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 3];
            stream.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
        }),
        Transport::Udp => {
            let local = SocketAddr::new(
                if ip.is_ipv4() {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    IpAddr::from([0u16; 8])
                },
                0,
            );
            let Ok(socket) = UdpSocket::bind(local) else {
                return false;
            };
            let payload = b"calico-sim probe";
            if socket.set_read_timeout(Some(timeout)).is_err()
                || socket.send_to(payload, to).is_err()
            {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(socket.recv_from(&mut buf), Ok((n, from)) if from == to && &buf[..n] == payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_udp_answer_on_loopback_and_a_closed_port_does_not() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Some(Ok(mut s)) = tcp.incoming().next() {
                let _ = s.write_all(b"ok\n");
            }
        });
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert!(connect(
            Transport::Tcp,
            lo,
            tcp_port,
            Duration::from_secs(2)
        ));

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        assert!(connect(
            Transport::Udp,
            lo,
            udp_port,
            Duration::from_secs(2)
        ));

        // Nobody listens on the port just freed: no answer.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!connect(
            Transport::Tcp,
            lo,
            closed_port,
            Duration::from_millis(500)
        ));
    }
}
