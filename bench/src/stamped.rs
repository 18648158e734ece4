//! A TCP stream that remembers when its latest bytes reached the socket, by the
//! kernel's receive timestamp (`SO_TIMESTAMPNS`), not by when this process got
//! round to reading them.
//!
//! One load generator on one core plays thousands of clients: when an event
//! reaches 1,000 subscribers at once it reads their frames one after another,
//! and the last frame is read long after it arrived. Timing frames when they are
//! read would charge the generator's own queueing to the server; the arrival time
//! is what a client on a machine of its own would see. Both are reported.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Wall-clock nanoseconds at which the bytes of the latest read arrived (0 before
/// any). Shared, so that a reader wrapped in other layers can still be asked.
#[derive(Debug, Clone, Default)]
pub struct Arrival(Arc<AtomicU64>);

impl Arrival {
    pub fn nanos(&self) -> u128 {
        u128::from(self.0.load(Ordering::Relaxed))
    }
}

pub struct Stamped {
    inner: TcpStream,
    cmsg: Vec<u8>,
    arrival: Arrival,
}

impl Stamped {
    /// Asks the kernel to timestamp what `inner` receives.
    pub fn new(inner: TcpStream) -> io::Result<Stamped> {
        setsockopt(&inner, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        inner.set_nodelay(true)?;
        Ok(Stamped {
            inner,
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
            arrival: Arrival::default(),
        })
    }

    pub fn arrival(&self) -> Arrival {
        self.arrival.clone()
    }
}

impl AsyncRead for Stamped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let cmsg = &mut this.cmsg;
            let read = this.inner.try_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(unfilled)];
                let msg = recvmsg::<()>(fd, &mut iov, Some(cmsg.as_mut_slice()), MsgFlags::empty())
                    .map_err(io::Error::from)?;
                let mut at = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmTimestampns(ts) = c {
                            at = Some(ts);
                        }
                    }
                }
                Ok((msg.bytes, at))
            });
            match read {
                Ok((n, at)) => {
                    if let Some(ts) = at {
                        let nanos = (ts.tv_sec() as u64)
                            .saturating_mul(1_000_000_000)
                            .saturating_add(ts.tv_nsec() as u64);
                        this.arrival.0.store(nanos, Ordering::Relaxed);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
