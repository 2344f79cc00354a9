//! SQLite's conversions between numbers and text, as its C code does them
//! (`sqlite3AtoF`, `sqlite3Atoi64`, `%!.17g` rendering): what a DEFAULT
//! evaluates to depends on them (see [`super::default`]).

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `sqlite3AtoF`: the value of the longest numeric prefix (after leading
/// spaces) and the kind of the whole: `1` a pure integer, `2` a number with
/// a point or exponent, `0` not a number, `-1` a non-integer number
/// followed by other text.
pub(crate) fn atof(s: &str) -> (f64, i32) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    let start = i;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    let mut n = digits(&mut i);
    let mut real = false;
    if i < b.len() && b[i] == b'.' {
        let mut j = i + 1;
        let f = digits(&mut j);
        if n + f > 0 {
            i = j;
            n += f;
            real = true;
        }
    }
    if n == 0 {
        return (0.0, 0);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if digits(&mut j) > 0 {
            i = j;
            real = true;
        }
    }
    let value: f64 = s[start..i].parse().unwrap_or(0.0);
    let mut end = i;
    while end < b.len() && is_space(b[end]) {
        end += 1;
    }
    let kind = match (end == b.len(), real) {
        (true, false) => 1,
        (true, true) => 2,
        (false, false) => 0,
        (false, true) => -1,
    };
    (value, kind)
}

/// `sqlite3Atoi64`: the integer prefix (saturated on overflow) and its
/// return code: 0 the whole text is an in-range integer, 1 other text
/// follows (or there are no digits), 2 overflow, 3 exactly 2^63.
pub(crate) fn atoi64(s: &str) -> (i64, u8) {
    let t = s.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = d.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return (0, 1);
    }
    let digits = &d[..n];
    let extra = u8::from(n != d.len());
    let v = if neg {
        format!("-{digits}").parse::<i64>().ok()
    } else {
        digits.parse::<i64>().ok()
    };
    match v {
        Some(v) => (v, extra),
        None if neg => (i64::MIN, 2),
        None if digits.trim_start_matches('0') == "9223372036854775808" => (i64::MAX, 3),
        None => (i64::MAX, 2),
    }
}

/// `sqlite3RealSameAsInt`.
pub(crate) fn real_same_as_int(r: f64, i: i64) -> bool {
    r == 0.0 || (r.to_bits() == (i as f64).to_bits() && (-(1i64 << 51)..(1i64 << 51)).contains(&i))
}

/// A real as SQLite renders it to text (`%!.17g` in `vdbeMemRenderNum`,
/// `sqlite3FpDecode`): 17 significant digits, fewer when the value ends in
/// a run of 9s or 0s that a shorter text reproduces exactly; trailing zeros
/// dropped but one digit kept after the point; exponent form outside
/// 1e-4 .. 1e17, with a signed exponent of at least two digits.
pub(crate) fn real_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0.0".into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let r = f.abs();
    // 18 significant digits, the decimal exponent of the first.
    let sci = format!("{r:.17e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp10: i32 = exp.parse().unwrap_or(0);
    let z: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    let n = z.len() as i32; // 18
    let int_dp = exp10 + 1 >= n;
    let same = |digits: u64, jj: usize| -> bool {
        let shift = exp10 + 1 - jj as i32;
        format!("{digits}e{shift}").parse::<f64>() == Ok(r)
    };
    let prefix = |jj: usize| {
        z[..jj]
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'))
    };
    let mut keep = 17usize;
    if z[15] == b'9' && z[14] == b'9' {
        let mut jj = 14;
        while jj > 0 && z[jj - 1] == b'9' {
            jj -= 1;
        }
        // The first jj digits plus one (a carry may add a digit).
        let v2 = if jj == 0 { 1 } else { prefix(jj) + 1 };
        if same(v2, jj) {
            keep = jj + 1;
        }
    } else if int_dp || (z[15] == b'0' && z[14] == b'0' && z[13] == b'0') {
        let mut jj = 13;
        while jj > 1 && z[jj - 1] == b'0' {
            jj -= 1;
        }
        if same(prefix(jj), jj) {
            keep = jj + 1;
        }
    }
    // Round half up at `keep` digits.
    let mut d: Vec<u8> = z[..keep].to_vec();
    let mut dp = exp10 + 1; // digits before the point
    if z[keep] >= b'5' {
        let mut j = keep;
        loop {
            if j == 0 {
                d.insert(0, b'1');
                dp += 1;
                break;
            }
            j -= 1;
            if d[j] == b'9' {
                d[j] = b'0';
            } else {
                d[j] += 1;
                break;
            }
        }
    }
    while d.len() > 1 && d.last() == Some(&b'0') {
        d.pop();
    }
    let digits = String::from_utf8(d).unwrap_or_default();
    let exp = dp - 1;
    if !(-4..=16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}.{rest}e{esign}{:02}", exp.abs());
    }
    let out = if exp >= 0 {
        let e = exp as usize;
        let int: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(e + 1)
            .collect();
        let frac = digits.get(e + 1..).unwrap_or("");
        format!("{int}.{}", if frac.is_empty() { "0" } else { frac })
    } else {
        format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
    };
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_rendering() {
        assert_eq!(real_text(1.0), "1.0");
        assert_eq!(real_text(0.1), "0.1");
        assert_eq!(real_text(-1.5), "-1.5");
        assert_eq!(real_text(1e20), "1.0e+20");
        assert_eq!(real_text(-0.0), "0.0");
        assert_eq!(real_text(1e-7), "1.0e-07");
        assert_eq!(real_text(123456.5), "123456.5");
        assert_eq!(real_text(0.30000000000000004), "0.30000000000000004");
        assert_eq!(real_text(49.47), "49.47");
        assert_eq!(real_text(1e16), "10000000000000000.0");
        assert_eq!(real_text(1e17), "1.0e+17");
        assert_eq!(real_text(-(i64::MIN as f64)), "9.2233720368547758e+18");
    }
}
