//! The encoding of a classic group's state in its row: a versioned binary
//! layout (big-endian integers, length-prefixed strings and bytes) written
//! as lowercase hex, so both backends store it as plain text.

use std::collections::BTreeMap;

use super::classic_state::{Group, Member};
use crate::classic::ClassicPhase;
use crate::error::{Error, Result};

/// The layout written; version 1 (without the initial join wait) is
/// still read.
const VERSION: u8 = 2;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn opt(&mut self, s: &Option<String>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.bytes(s.as_bytes());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

fn corrupt(what: &str) -> Error {
    Error::InvalidArgument {
        field: "stored classic group state",
        reason: format!("cannot read {what}"),
    }
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt(what))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take::<1>(what)?[0])
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>> {
        let len = u32::from_be_bytes(self.take(what)?) as usize;
        if len > self.0.len() {
            return Err(corrupt(what));
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(b.to_vec())
    }
    fn string(&mut self, what: &str) -> Result<String> {
        String::from_utf8(self.bytes(what)?).map_err(|_| corrupt(what))
    }
    fn opt(&mut self, what: &str) -> Result<Option<String>> {
        match self.u8(what)? {
            0 => Ok(None),
            _ => self.string(what).map(Some),
        }
    }
}

fn phase_code(p: ClassicPhase) -> u8 {
    match p {
        ClassicPhase::Empty => 0,
        ClassicPhase::PreparingRebalance => 1,
        ClassicPhase::CompletingRebalance => 2,
        ClassicPhase::Stable => 3,
    }
}

/// The group's state as stored (everything but its id and the clock).
pub(crate) fn encode(g: &Group) -> String {
    let mut w = Writer(Vec::new());
    w.u8(VERSION);
    w.u8(phase_code(g.phase));
    w.i32(g.generation);
    w.bytes(g.protocol_type.as_bytes());
    w.bytes(g.protocol.as_bytes());
    w.opt(&g.leader);
    w.i64(g.rebalance_deadline_ms);
    w.i64(g.initial_join_until_ms);
    w.i32(g.members.len() as i32);
    for (id, m) in &g.members {
        w.bytes(id.as_bytes());
        w.opt(&m.instance_id);
        w.bytes(m.client_id.as_bytes());
        w.bytes(m.client_host.as_bytes());
        w.i64(m.session_timeout_ms);
        w.i64(m.rebalance_timeout_ms);
        w.i32(m.protocols.len() as i32);
        for (name, metadata) in &m.protocols {
            w.bytes(name.as_bytes());
            w.bytes(metadata);
        }
        w.i64(m.last_seen_ms);
        w.u8(u8::from(m.awaiting_join));
        w.i32(m.generation);
        w.bytes(&m.assignment);
    }
    hex(&w.0)
}

/// The group stored as `text`, at database time `now`.
pub(crate) fn decode(group_id: &str, now: i64, text: &str) -> Result<Group> {
    let raw = unhex(text).ok_or_else(|| corrupt("its hex"))?;
    let mut r = Reader(&raw);
    let version = r.u8("the version")?;
    if !(1..=VERSION).contains(&version) {
        return Err(corrupt("an unknown version"));
    }
    let phase = match r.u8("the phase")? {
        0 => ClassicPhase::Empty,
        1 => ClassicPhase::PreparingRebalance,
        2 => ClassicPhase::CompletingRebalance,
        3 => ClassicPhase::Stable,
        _ => return Err(corrupt("the phase")),
    };
    let generation = r.i32("the generation")?;
    let protocol_type = r.string("the protocol type")?;
    let protocol = r.string("the protocol")?;
    let leader = r.opt("the leader")?;
    let rebalance_deadline_ms = r.i64("the deadline")?;
    let initial_join_until_ms = if version >= 2 {
        r.i64("the initial join wait")?
    } else {
        0
    };
    let count = r.i32("the member count")?;
    let mut members = BTreeMap::new();
    for _ in 0..count.max(0) {
        let id = r.string("a member id")?;
        let instance_id = r.opt("an instance id")?;
        let client_id = r.string("a client id")?;
        let client_host = r.string("a client host")?;
        let session_timeout_ms = r.i64("a session timeout")?;
        let rebalance_timeout_ms = r.i64("a rebalance timeout")?;
        let n = r.i32("a protocol count")?;
        let mut protocols = Vec::new();
        for _ in 0..n.max(0) {
            protocols.push((r.string("a protocol name")?, r.bytes("protocol metadata")?));
        }
        let member = Member {
            instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols,
            last_seen_ms: r.i64("a member's last request time")?,
            awaiting_join: r.u8("a join flag")? != 0,
            generation: r.i32("a member's generation")?,
            assignment: r.bytes("an assignment")?,
        };
        members.insert(id, member);
    }
    Ok(Group {
        group_id: group_id.to_string(),
        now,
        phase,
        generation,
        protocol_type,
        protocol,
        leader,
        rebalance_deadline_ms,
        initial_join_until_ms,
        members,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_round_trips() {
        let mut g = Group::empty("g", 5);
        g.phase = ClassicPhase::Stable;
        g.generation = 7;
        g.protocol_type = "consumer".into();
        g.protocol = "range".into();
        g.leader = Some("m1".into());
        g.rebalance_deadline_ms = 99;
        g.initial_join_until_ms = 42;
        g.members.insert(
            "m1".into(),
            Member {
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/1.2.3.4".into(),
                session_timeout_ms: 10,
                rebalance_timeout_ms: 20,
                protocols: vec![("range".into(), vec![0, 1, 255])],
                last_seen_ms: 3,
                awaiting_join: true,
                generation: 7,
                assignment: vec![9; 3],
            },
        );
        let text = encode(&g);
        assert_eq!(decode("g", 5, &text).unwrap(), g);
        assert!(decode("g", 5, &text[..text.len() - 2]).is_err());
        assert!(decode("g", 5, "zz").is_err());
    }

    #[test]
    fn the_first_layout_is_still_read() {
        let mut g = Group::empty("g", 5);
        g.phase = ClassicPhase::Stable;
        g.generation = 3;
        g.protocol_type = "consumer".into();
        g.protocol = "range".into();
        g.leader = None;
        g.rebalance_deadline_ms = 99;
        let v2 = unhex(&encode(&g)).unwrap();
        // Version 1: no initial join wait after the deadline.
        let deadline_end = 1 + 1 + 4 + (4 + 8) + (4 + 5) + 1 + 8;
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[1..deadline_end]);
        v1.extend_from_slice(&v2[deadline_end + 8..]);
        assert_eq!(decode("g", 5, &hex(&v1)).unwrap(), g);
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert!(decode("g", 5, &hex(&v3)).is_err());
    }
}
