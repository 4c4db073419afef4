//! The per-address throttle of the staff sign-in and the activation pages
//! (a brute-force guard besides the per-account and per-link lockouts):
//! governor's keyed GCRA limiter, keyed by the client's IP address from
//! axum's `ConnectInfo`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The address a request came from, when the server was started with
/// connect info (`serve` does); none in a router used without it.
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// Addresses remembered before old ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

pub(crate) struct Throttle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Throttle {
    /// `per_minute` requests a minute per address, all of them allowed in
    /// a burst.
    pub(crate) fn new(per_minute: u32) -> Throttle {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// Whether a request from `ip` may go on. A request without an address
    /// is counted under the unspecified address, so it is throttled too.
    pub(crate) fn allow(&self, ip: Option<IpAddr>) -> bool {
        if self.limiter.len() > SWEEP_ABOVE {
            self.limiter.retain_recent();
        }
        let key = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.limiter.check_key(&key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_allowance() {
        let throttle = Throttle::new(3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!((0..3).all(|_| throttle.allow(a)));
        assert!(!throttle.allow(a));
        assert!(throttle.allow(b));
    }
}
