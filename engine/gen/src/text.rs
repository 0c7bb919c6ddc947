//! Allocation-free text helpers for the hot rendering loop, and the textual
//! forms of the synthetic identifiers.
//!
//! Every identifier is obviously synthetic: phones are `+99` followed by ten
//! digits (no such country code), identity numbers start with `ZZ`, bank
//! cards with `9999`, IPv4 addresses are private (10.0.0.0/8) and IPv6 ones
//! are in the documentation prefix 2001:db8::/32.

use std::fmt::Write as _;

pub(crate) fn push_u64(buf: &mut String, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &tmp[i..] {
        buf.push(b as char);
    }
}

/// `n` left-padded with zeros to at least `width` digits.
pub(crate) fn push_padded(buf: &mut String, n: u64, width: usize) {
    let mut digits = 1;
    let mut x = n;
    while x >= 10 {
        x /= 10;
        digits += 1;
    }
    for _ in digits..width {
        buf.push('0');
    }
    push_u64(buf, n);
}

/// A money amount given in cents: `1234` -> `12.34`, `1200` -> `12`.
pub(crate) fn push_cents(buf: &mut String, cents: u64) {
    push_u64(buf, cents / 100);
    let c = cents % 100;
    if c != 0 {
        buf.push('.');
        buf.push((b'0' + (c / 10) as u8) as char);
        if c % 10 != 0 {
            buf.push((b'0' + (c % 10) as u8) as char);
        }
    }
}

/// A fraction given in basis points: `1825` -> `0.1825`.
pub(crate) fn push_bp(buf: &mut String, bp: u32) {
    push_u64(buf, u64::from(bp / 10_000));
    let mut frac = bp % 10_000;
    if frac != 0 {
        buf.push('.');
        let mut div = 1000;
        while frac != 0 {
            buf.push((b'0' + (frac / div) as u8) as char);
            frac %= div;
            div /= 10;
        }
    }
}

pub(crate) fn push_hex16(buf: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        buf.push(HEX[((v >> (i * 4)) & 0xF) as usize] as char);
    }
}

pub(crate) fn push_user(buf: &mut String, idx: u32) {
    buf.push_str("u-");
    push_padded(buf, u64::from(idx), 6);
}

pub(crate) fn user_id(idx: u32) -> String {
    let mut s = String::new();
    push_user(&mut s, idx);
    s
}

pub(crate) fn push_device(buf: &mut String, id: u64) {
    buf.push_str("dev-");
    push_hex16(buf, id);
}

pub(crate) fn device_id(id: u64) -> String {
    let mut s = String::new();
    push_device(&mut s, id);
    s
}

/// Synthetic phone: `+99` and ten digits.
pub(crate) fn push_phone(buf: &mut String, v: u64) {
    buf.push_str("+99");
    push_padded(buf, v, 10);
}

/// Synthetic identity number: `ZZ` and sixteen digits.
pub(crate) fn push_id_number(buf: &mut String, v: u64) {
    buf.push_str("ZZ");
    push_padded(buf, v, 16);
}

/// Synthetic 16-digit bank card starting with `9999`.
pub(crate) fn push_card(buf: &mut String, v: u64) {
    buf.push_str("9999");
    push_padded(buf, v, 12);
}

/// An IP address: IPv4 (private range) or IPv6 (documentation prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ip {
    V4(u32),
    /// The low 48 bits fill three groups after 2001:db8.
    V6(u64),
}

impl Ip {
    pub(crate) fn push(self, buf: &mut String) {
        match self {
            Ip::V4(v) => {
                for (i, shift) in [24, 16, 8, 0].into_iter().enumerate() {
                    if i > 0 {
                        buf.push('.');
                    }
                    push_u64(buf, u64::from((v >> shift) & 0xFF));
                }
            }
            Ip::V6(v) => {
                let _ = write!(
                    buf,
                    "2001:db8:{:x}:{:x}::{:x}",
                    (v >> 32) & 0xFFFF,
                    (v >> 16) & 0xFFFF,
                    (v & 0xFFFF).max(1)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut String)) -> String {
        let mut b = String::new();
        f(&mut b);
        b
    }

    #[test]
    fn numbers() {
        assert_eq!(s(|b| push_u64(b, 0)), "0");
        assert_eq!(s(|b| push_u64(b, u64::MAX)), u64::MAX.to_string());
        assert_eq!(s(|b| push_padded(b, 123, 9)), "000000123");
        assert_eq!(s(|b| push_padded(b, 1_234_567_890, 9)), "1234567890");
        assert_eq!(s(|b| push_cents(b, 1234)), "12.34");
        assert_eq!(s(|b| push_cents(b, 1250)), "12.5");
        assert_eq!(s(|b| push_cents(b, 1200)), "12");
        assert_eq!(s(|b| push_cents(b, 5)), "0.05");
        assert_eq!(s(|b| push_bp(b, 1825)), "0.1825");
        assert_eq!(s(|b| push_bp(b, 1800)), "0.18");
        assert_eq!(s(|b| push_bp(b, 305)), "0.0305");
        assert_eq!(s(|b| push_bp(b, 0)), "0");
    }

    #[test]
    fn identifiers() {
        assert_eq!(s(|b| push_phone(b, 42)), "+990000000042");
        assert_eq!(s(|b| push_id_number(b, 7)), "ZZ0000000000000007");
        assert_eq!(s(|b| push_card(b, 9)), "9999000000000009");
        assert_eq!(s(|b| Ip::V4(0x0A01_0203).push(b)), "10.1.2.3");
        let v6 = s(|b| Ip::V6(0x1234_5678_9ABC).push(b));
        assert_eq!(v6, "2001:db8:1234:5678::9abc");
        assert!(v6.parse::<std::net::Ipv6Addr>().is_ok());
        assert_eq!(device_id(255), "dev-00000000000000ff");
    }
}
