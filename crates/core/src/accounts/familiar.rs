//! Where an account has signed in before: its browsers (a device cookie of ours) and its
//! client networks. A sign-in attempt from a familiar browser or network counts against
//! a limit of its own, so failures from anywhere else cannot lock the owner out (the
//! policy and what it costs an attacker: docs/security.md, "Sign-in throttling").
//!
//! The device cookie holds a random 128-bit id and a MAC of it under the pseudonym key:
//! a made-up or altered value is refused without a lookup, and the table stores only the
//! id's SHA-256. Changing the pseudonym key makes every browser unfamiliar again.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::pseudonym::Pseudonymizer;
use crate::schema::{familiar_devices, familiar_networks};

/// The device cookie's name (HttpOnly, Secure, SameSite=Lax, Path=/).
pub const DEVICE_COOKIE: &str = "__Host-fluxi_device";
/// How long a browser keeps it (the longest browsers allow).
pub const DEVICE_COOKIE_MAX_AGE: Duration = Duration::days(400);
/// A browser or network is forgotten this long after the last sign-in from it.
pub const REMEMBERED_FOR: Duration = Duration::days(180);

/// One browser, as its device cookie names it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceId(String);

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceId(…)")
    }
}

impl DeviceId {
    /// A new browser's id (128 bits from the OS's generator).
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self(hex::encode(id))
    }

    /// The cookie's value: the id and its MAC.
    pub fn cookie_value(&self, keys: &Pseudonymizer) -> String {
        format!("{}.{}", self.0, hex::encode(&mac(keys, &self.0)[..16]))
    }

    /// The id in a cookie value, if the value is one of ours.
    pub fn from_cookie(value: &str, keys: &Pseudonymizer) -> Option<Self> {
        let (id, tag) = value.split_once('.')?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        let expected = mac(keys, id);
        // Constant time: the comparison must not tell how much of a forged tag was right.
        let same = tag.len() == 16 && tag.iter().zip(&expected[..16]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then(|| Self(id.to_string()))
    }

    /// What the table stores of it.
    fn stored(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// Names this browser for one account in a throttling key.
    pub(super) fn key_part(&self) -> String {
        hex::encode(self.stored())
    }
}

fn mac(keys: &Pseudonymizer, id: &str) -> Vec<u8> {
    keys.pseudonym("device-cookie", id)
}

/// The keyed pseudonym under which a client network is remembered.
pub fn network_pseudonym(keys: &Pseudonymizer, client_network: &str) -> Vec<u8> {
    keys.pseudonym("familiar-network", client_network)
}

/// How well an account knows where an attempt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Familiarity {
    /// A browser that has signed in to this account before.
    Device,
    /// A network this account has signed in from before (another browser).
    Network,
    Unfamiliar,
}

/// Whether `user` has signed in from this browser or network before. Always one query,
/// also for an unknown email (`user` `None`), so that an attempt costs the same whether
/// or not the account exists.
pub async fn familiarity(
    conn: &mut AsyncPgConnection,
    user: Option<Uuid>,
    device: Option<&DeviceId>,
    network: Option<&[u8]>,
) -> QueryResult<Familiarity> {
    let user = user.unwrap_or(Uuid::nil());
    let device = device.map(DeviceId::stored).unwrap_or_default();
    let network = network.unwrap_or_default().to_vec();
    let (by_device, by_network): (bool, bool) = diesel::select((
        diesel::dsl::exists(
            familiar_devices::table
                .filter(familiar_devices::user_id.eq(user))
                .filter(familiar_devices::device_hash.eq(device)),
        ),
        diesel::dsl::exists(
            familiar_networks::table
                .filter(familiar_networks::user_id.eq(user))
                .filter(familiar_networks::network_pn.eq(network)),
        ),
    ))
    .get_result(conn)
    .await?;
    Ok(match (by_device, by_network) {
        (true, _) => Familiarity::Device,
        (false, true) => Familiarity::Network,
        (false, false) => Familiarity::Unfamiliar,
    })
}

/// Remembers a successful sign-in's browser and network for `user`. Returns true when
/// both are known and neither had signed in to the account before (a sign-in from a new
/// place, which the account's owner is told about).
pub async fn remember(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    device: Option<&DeviceId>,
    network: Option<&[u8]>,
    now: OffsetDateTime,
) -> QueryResult<bool> {
    // `xmax = 0` holds for a row this statement inserted, not for one it updated.
    let inserted = || diesel::dsl::sql::<diesel::sql_types::Bool>("xmax = 0");
    let mut new_device = false;
    if let Some(device) = device {
        new_device = diesel::insert_into(familiar_devices::table)
            .values((
                familiar_devices::user_id.eq(user),
                familiar_devices::device_hash.eq(device.stored()),
                familiar_devices::last_signed_in_at.eq(now),
            ))
            .on_conflict((familiar_devices::user_id, familiar_devices::device_hash))
            .do_update()
            .set(familiar_devices::last_signed_in_at.eq(now))
            .returning(inserted())
            .get_result(conn)
            .await?;
    }
    let mut new_network = false;
    if let Some(network) = network {
        new_network = diesel::insert_into(familiar_networks::table)
            .values((
                familiar_networks::user_id.eq(user),
                familiar_networks::network_pn.eq(network),
                familiar_networks::last_signed_in_at.eq(now),
            ))
            .on_conflict((familiar_networks::user_id, familiar_networks::network_pn))
            .do_update()
            .set(familiar_networks::last_signed_in_at.eq(now))
            .returning(inserted())
            .get_result(conn)
            .await?;
    }
    Ok(new_device && new_network)
}

/// Forgets every browser and network of `user` (a password reset: whoever held the account
/// may have made theirs familiar).
pub async fn forget_account(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<usize> {
    let devices =
        diesel::delete(familiar_devices::table.filter(familiar_devices::user_id.eq(user))).execute(conn).await?;
    let networks =
        diesel::delete(familiar_networks::table.filter(familiar_networks::user_id.eq(user))).execute(conn).await?;
    Ok(devices + networks)
}

/// Forgets browsers and networks not signed in from for [`REMEMBERED_FOR`]; run with the
/// session cleanup.
pub async fn forget_stale(conn: &mut AsyncPgConnection, now: OffsetDateTime) -> QueryResult<usize> {
    let before = now - REMEMBERED_FOR;
    let devices = diesel::delete(familiar_devices::table.filter(familiar_devices::last_signed_in_at.lt(before)))
        .execute(conn)
        .await?;
    let networks = diesel::delete(familiar_networks::table.filter(familiar_networks::last_signed_in_at.lt(before)))
        .execute(conn)
        .await?;
    Ok(devices + networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_cookie_values_name_a_device() {
        let keys = Pseudonymizer::random();
        let device = DeviceId::random();
        let value = device.cookie_value(&keys);
        assert_eq!(DeviceId::from_cookie(&value, &keys), Some(device.clone()));
        assert_eq!(DeviceId::from_cookie(&value, &Pseudonymizer::random()), None, "another key");
        let (id, tag) = value.split_once('.').unwrap();
        let other = DeviceId::random().cookie_value(&keys);
        let (_, other_tag) = other.split_once('.').unwrap();
        for forged in [format!("{id}.{other_tag}"), format!("{id}.{}", &tag[..30]), id.to_string(), String::new()] {
            assert_eq!(DeviceId::from_cookie(&forged, &keys), None, "{forged}");
        }
        assert!(!format!("{device:?}").contains(id), "no id in Debug output");
    }
}
