//! The interface and route ioctls behind `crate::network`: addresses,
//! netmask, IFF_UP and the default route, set the way ifconfig and route
//! do (no netlink: these few ioctls are all a static configuration needs).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct ifreq` from <net/if.h>.
#[repr(C, align(8))]
struct IfReq {
    name: [u8; 16],
    // The kernel's union (sockaddr, flags, ifmap): 24 bytes on 64-bit,
    // 16 on 32-bit; the larger size is harmless there.
    data: [u8; 24],
}

/// IFNAMSIZ: the name and its terminating NUL must fit.
const IFNAMSIZ: usize = 16;

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        if name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name '{name}'"),
            ));
        }
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }
    fn set_addr(&mut self, ip: Ipv4Addr) {
        self.data[..16].copy_from_slice(&sockaddr_in_bytes(ip));
    }
    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_flags(&mut self, f: libc::c_short) {
        self.data[..2].copy_from_slice(&f.to_ne_bytes());
    }
}

/// `struct rtentry` from <linux/route.h>.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const SIOCADDRT: libc::c_ulong = 0x890b;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

/// The 16 bytes of a `struct sockaddr_in` for `ip` (port 0): the family
/// in host order, then port and address in network order, then zeroes.
fn sockaddr_in_bytes(ip: Ipv4Addr) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
    b[4..8].copy_from_slice(&ip.octets());
    b
}

/// `ip` as the generic `struct sockaddr` that rtentry holds.
fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let b = sockaddr_in_bytes(ip);
    let mut sa = libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: [0; 14],
    };
    for (d, s) in sa.sa_data.iter_mut().zip(&b[2..]) {
        // c_char is i8 or u8 depending on the target: keep the bits.
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    sa
}

/// An AF_INET datagram socket, the handle the interface ioctls go through.
pub struct Socket(OwnedFd);

impl Socket {
    pub fn new() -> io::Result<Socket> {
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// ioctl(2) on the socket.
    ///
    /// # Safety
    ///
    /// `arg` must be the structure the kernel expects for `req` (IfReq for
    /// the SIOC*IF* requests, RtEntry for SIOCADDRT), so the kernel reads
    /// and writes only inside it.
    unsafe fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: per this function's contract `arg` is the structure this
        // request expects, and the exclusive borrow keeps it alive and
        // unaliased across the call. The request type differs between
        // libcs, hence `as _`.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, arg as *mut T) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets IFF_UP on the interface, keeping its other flags, like
    /// `ifconfig NAME up`.
    pub fn interface_up(&self, name: &str) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        // SAFETY: SIOCGIFFLAGS takes a struct ifreq, which IfReq is.
        unsafe { self.ioctl(SIOCGIFFLAGS, &mut r)? };
        r.set_flags(r.flags() | libc::IFF_UP as libc::c_short);
        // SAFETY: SIOCSIFFLAGS takes a struct ifreq, which IfReq is.
        unsafe { self.ioctl(SIOCSIFFLAGS, &mut r) }
    }

    /// Sets the interface's IPv4 address.
    pub fn set_address(&self, name: &str, ip: Ipv4Addr) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        r.set_addr(ip);
        // SAFETY: SIOCSIFADDR takes a struct ifreq, which IfReq is.
        unsafe { self.ioctl(SIOCSIFADDR, &mut r) }
    }

    /// Sets the interface's netmask, given as an address (255.255.255.0).
    pub fn set_netmask(&self, name: &str, mask: Ipv4Addr) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        r.set_addr(mask);
        // SAFETY: SIOCSIFNETMASK takes a struct ifreq, which IfReq is.
        unsafe { self.ioctl(SIOCSIFNETMASK, &mut r) }
    }

    /// Adds a default route (0.0.0.0/0) via `gateway`; the kernel picks the
    /// interface whose subnet holds it.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        // SAFETY: all-zero is a valid rtentry (null pointers, zero
        // integers and addresses), and zeroing also clears the padding
        // the kernel copies in with it.
        let mut rt: RtEntry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        // SAFETY: SIOCADDRT takes a struct rtentry, which RtEntry is (its
        // layout is checked by a test).
        unsafe { self.ioctl(SIOCADDRT, &mut rt) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structures_have_the_kernel_layout() {
        let ptr = std::mem::size_of::<usize>();
        assert_eq!(
            std::mem::size_of::<RtEntry>(),
            if ptr == 8 { 120 } else { 84 }
        );
        assert!(std::mem::size_of::<IfReq>() >= if ptr == 8 { 40 } else { 32 });
        assert_eq!(std::mem::size_of::<libc::sockaddr_in>(), 16);
    }

    /// The hand-built bytes are what libc's `sockaddr_in` looks like.
    #[test]
    fn sockaddr_bytes_match_libc() {
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in is 16 bytes of integers with no padding.
        let want: [u8; 16] = unsafe { std::mem::transmute(sin) };
        assert_eq!(sockaddr_in_bytes(ip), want);
        let sa = sockaddr_in(ip);
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let data: Vec<u8> = sa.sa_data.iter().map(|c| c.to_ne_bytes()[0]).collect();
        assert_eq!(data[..], want[2..]);
    }

    #[test]
    fn interface_names_must_fit() {
        assert!(IfReq::new("eth0").is_ok());
        assert!(IfReq::new("0123456789abcdef").is_err());
        assert!(IfReq::new("a\0b").is_err());
    }
}
