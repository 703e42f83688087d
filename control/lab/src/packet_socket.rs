//! Crafted frames onto a link: a raw AF_PACKET socket bound to one interface, inside a
//! namespace.
use anyhow::{bail, Result};
use wirewatch_testkit::netns::enter_current_thread;

/// Sends one crafted Ethernet frame out of `dev` from inside `ns` (AF_PACKET).
pub(crate) fn send_frame(ns: &str, dev: &str, frame: &[u8]) -> Result<()> {
    let ns = ns.to_string();
    let dev = dev.to_string();
    let frame = frame.to_vec();
    std::thread::spawn(move || -> Result<()> {
        enter_current_thread(&ns)?;
        let s = PacketSocket::open(&dev)?;
        s.send(&frame)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("frame sender panicked"))?
}

/// A raw AF_PACKET socket bound to one interface.
pub(crate) struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    pub(crate) fn open(dev: &str) -> Result<Self> {
        let c = std::ffi::CString::new(dev)?;
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
            if ifindex == 0 {
                bail!("no interface {dev}");
            }
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex;
            if libc::bind(
                fd,
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                libc::close(fd);
                bail!("binding AF_PACKET to {dev}: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as u32,
            );
            Ok(Self { fd })
        }
    }
    pub(crate) fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: valid fd and buffer.
        let n =
            unsafe { libc::send(self.fd, frame.as_ptr().cast::<libc::c_void>(), frame.len(), 0) };
        if n < 0 {
            bail!("sending a crafted frame: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: valid fd and buffer.
        let n =
            unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len(), 0) };
        (n > 0).then_some(n as usize)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}
