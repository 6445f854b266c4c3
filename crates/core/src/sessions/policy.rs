//! Idle and absolute session lifetimes, enforced by the server (tower-sessions has no
//! absolute timeout and its inactivity expiry ignores reads).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Session data key under which the signed-in state is stored.
pub const AUTH_KEY: &str = "auth";

/// Who is signed in, since when, and when they were last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub user_id: Uuid,
    #[serde(with = "time::serde::timestamp")]
    pub authenticated_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    pub last_seen_at: OffsetDateTime,
    /// This session gave a second factor (at sign-in, or by confirming an authenticator
    /// in it). Workspaces that require two-factor authentication admit only such sessions.
    #[serde(default)]
    pub second_factor: bool,
    /// When this session last confirmed who it is (password, and a code with MFA) for a
    /// sensitive action; the next ones within the step-up window need not ask again.
    #[serde(default, with = "time::serde::timestamp::option")]
    pub stepped_up_at: Option<OffsetDateTime>,
    /// The account's `sessions_epoch` this session was made under; a newer one on the
    /// account means it was signed out.
    #[serde(default)]
    pub sessions_epoch: i32,
}

impl AuthState {
    pub fn signed_in_with(&self) -> SignedInWith {
        if self.second_factor {
            SignedInWith::SecondFactor
        } else {
            SignedInWith::PasswordOnly
        }
    }
}

/// How a session was signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedInWith {
    PasswordOnly,
    SecondFactor,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// Signed out after this long without a request (default 30 min).
    pub idle_timeout: Duration,
    /// Signed out this long after signing in, whatever the activity (default 12 h).
    pub absolute_timeout: Duration,
    /// `last_seen_at` is rewritten at most this often, so a busy session does not
    /// cost a database write per request. Idle expiry is exact to within this interval.
    pub touch_interval: Duration,
    /// A step-up holds for this long (default 10 min): sensitive actions within it do
    /// not ask again.
    pub step_up_window: Duration,
}

impl SessionPolicy {
    /// Whether `state` confirmed who it is recently enough at `now` (a clock that went
    /// backwards does not count).
    pub fn step_up_fresh(&self, state: &AuthState, now: OffsetDateTime) -> bool {
        state.stepped_up_at.is_some_and(|at| at <= now && now - at < self.step_up_window)
    }
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::minutes(30),
            absolute_timeout: Duration::hours(12),
            touch_interval: Duration::seconds(60),
            step_up_window: Duration::minutes(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// Still valid; `touch` says `last_seen_at` should be refreshed now.
    Active {
        touch: bool,
    },
    IdleExpired,
    AbsoluteExpired,
}

impl SessionPolicy {
    pub fn check(&self, state: &AuthState, now: OffsetDateTime) -> SessionCheck {
        if now >= state.authenticated_at + self.absolute_timeout {
            SessionCheck::AbsoluteExpired
        } else if now >= state.last_seen_at + self.idle_timeout {
            SessionCheck::IdleExpired
        } else {
            SessionCheck::Active { touch: now - state.last_seen_at >= self.touch_interval }
        }
    }

    /// When the stored session row stops being valid (the sooner of both limits).
    pub fn expires_at(&self, state: &AuthState) -> OffsetDateTime {
        (state.last_seen_at + self.idle_timeout).min(state.authenticated_at + self.absolute_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(at: OffsetDateTime) -> AuthState {
        AuthState {
            user_id: Uuid::nil(),
            authenticated_at: at,
            last_seen_at: at,
            second_factor: false,
            stepped_up_at: None,
            sessions_epoch: 0,
        }
    }

    #[test]
    fn idle_and_absolute_limits() {
        let p = SessionPolicy::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut s = state(t0);
        assert_eq!(p.check(&s, t0 + Duration::seconds(10)), SessionCheck::Active { touch: false });
        assert_eq!(p.check(&s, t0 + Duration::seconds(61)), SessionCheck::Active { touch: true });
        assert_eq!(p.check(&s, t0 + Duration::minutes(30)), SessionCheck::IdleExpired);
        // Active every 20 minutes: idle never trips, but the absolute limit does.
        let mut now = t0;
        while now < t0 + Duration::hours(12) - Duration::minutes(20) {
            now += Duration::minutes(20);
            assert!(matches!(p.check(&s, now), SessionCheck::Active { .. }));
            s.last_seen_at = now;
        }
        assert_eq!(p.check(&s, t0 + Duration::hours(12)), SessionCheck::AbsoluteExpired);
        assert_eq!(p.expires_at(&s), t0 + Duration::hours(12));
    }

    #[test]
    fn a_step_up_holds_for_its_window_only() {
        let policy = SessionPolicy::default();
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(1);
        let mut s = state(t);
        assert!(!policy.step_up_fresh(&s, t), "never stepped up");
        s.stepped_up_at = Some(t);
        assert!(policy.step_up_fresh(&s, t + Duration::minutes(9)));
        assert!(!policy.step_up_fresh(&s, t + Duration::minutes(10)));
        assert!(!policy.step_up_fresh(&s, t - Duration::seconds(1)), "clock went back");
    }
}
