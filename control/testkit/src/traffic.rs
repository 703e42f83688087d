//! Real kernel TCP between network namespaces, for the lab and the privileged tests: servers
//! and clients on threads that enter a namespace, with pacing and small buffers on demand.
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::enter_current_thread;

fn setsockopt<T>(s: &impl AsRawFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: valid fd; `v` lives for the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(v).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Caps the socket's sending rate (TCP internal pacing), bytes per second.
pub fn pace(s: &TcpStream, bytes_per_sec: u64) -> io::Result<()> {
    setsockopt(s, libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, &bytes_per_sec)
}

/// Shrinks the receive buffer (a slow reader then advertises a zero window sooner).
pub fn small_rcvbuf(s: &impl AsRawFd, bytes: i32) -> io::Result<()> {
    setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
}

/// Closing will send RST instead of FIN (SO_LINGER with timeout 0).
pub fn abort_on_close(s: &TcpStream) -> io::Result<()> {
    setsockopt(s, libc::SOL_SOCKET, libc::SO_LINGER, &libc::linger { l_onoff: 1, l_linger: 0 })
}

/// Reads until the peer closes or the connection fails (a reset ends an upload too); returns
/// the bytes read.
pub fn drain(s: &mut impl io::Read) -> usize {
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

/// Listens on `addr` inside namespace `ns` and runs `f` on the first accepted connection.
/// Returns once the socket is listening. `rcvbuf` is set on the listener (inherited).
pub fn serve_once<T: Send + 'static>(
    ns: &str,
    addr: SocketAddr,
    rcvbuf: Option<i32>,
    f: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> io::Result<JoinHandle<io::Result<T>>> {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || -> io::Result<T> {
        let setup = || -> io::Result<TcpListener> {
            enter_current_thread(&ns)?;
            listener(addr, rcvbuf)
        };
        let l = match setup() {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        // Never wait forever for a client that failed to come.
        l.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no client connected within 20 s",
                    ))
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(f(s))
    });
    rx.recv().map_err(|_| io::Error::other("server thread died"))??;
    Ok(h)
}

/// A TCP socket with SO_REUSEADDR (and SO_RCVBUF, set before listen/connect so it applies
/// to the connection) bound to `addr`.
fn bound_socket(addr: SocketAddr, rcvbuf: Option<i32>) -> io::Result<std::os::fd::OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket syscall.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the fresh fd.
    let s = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    setsockopt(&s, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32)?;
    if let Some(b) = rcvbuf {
        small_rcvbuf(&s, b)?;
    }
    let (sa, len) = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const sa).cast::<libc::sockaddr>(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// A listener whose accepted sockets inherit `rcvbuf`.
fn listener(addr: SocketAddr, rcvbuf: Option<i32>) -> io::Result<TcpListener> {
    let s = bound_socket(addr, rcvbuf)?;
    // SAFETY: a bound socket we own.
    if unsafe { libc::listen(s.as_raw_fd(), 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(s))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid start.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// Connects from inside namespace `ns`, from a chosen local address and port.
pub fn connect_bound(ns: &str, local: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> io::Result<TcpStream> {
        enter_current_thread(&ns)?;
        let s = bound_socket(local, None)?;
        let fd = s.as_raw_fd();
        let s = TcpStream::from(s);
        let (sa, len) = sockaddr(to);
        // SAFETY: valid sockaddr; a blocking connect.
        if unsafe { libc::connect(fd, (&raw const sa).cast::<libc::sockaddr>(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    })
    .join()
    .map_err(|_| io::Error::other("connect thread panicked"))?
}

/// Connects from inside namespace `ns` and runs `f` on the connection.
pub fn connect_from<T: Send + 'static>(
    ns: &str,
    to: SocketAddr,
    f: impl FnOnce(io::Result<TcpStream>) -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let s = enter_current_thread(&ns)
            .and_then(|()| TcpStream::connect_timeout(&to, Duration::from_secs(5)));
        if let Ok(s) = &s {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        }
        f(s)
    })
}
