//! Validation of `on.schedule[].cron` (five fields; `*`, lists, ranges, steps, month and
//! weekday names), as GitHub accepts them.

struct Range {
    min: f64,
    max: f64,
    names: &'static [(&'static str, u32)],
}

const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];
const DAYS: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];

const MINUTE: Range = Range {
    min: 0.0,
    max: 59.0,
    names: &[],
};
const HOUR: Range = Range {
    min: 0.0,
    max: 23.0,
    names: &[],
};
const DOM: Range = Range {
    min: 1.0,
    max: 31.0,
    names: &[],
};
const MONTH: Range = Range {
    min: 1.0,
    max: 12.0,
    names: MONTHS,
};
const DOW: Range = Range {
    min: 0.0,
    max: 6.0,
    names: DAYS,
};

/// JavaScript's unary `+` on a string (GitHub's TypeScript parser reads each cron number so):
/// surrounding white space ignored, empty → 0, decimal with an optional sign, fraction and
/// exponent (`+5`, `1.`, `.5`, `1e1`), `0x`/`0o`/`0b` integers without a sign, `Infinity`;
/// anything else NaN.
fn js_num(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    let radix = match t.get(..2) {
        Some("0x" | "0X") => Some(16),
        Some("0o" | "0O") => Some(8),
        Some("0b" | "0B") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let digits = &t[2..];
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return f64::NAN;
        }
        return digits
            .chars()
            .filter_map(|c| c.to_digit(radix))
            .fold(0.0, |n, d| n * f64::from(radix) + f64::from(d));
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    // digits [. digits] | . digits, then [e|E [sign] digits]
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if !mantissa_ok || !exponent_ok {
        return f64::NAN;
    }
    t.parse().unwrap_or(f64::NAN)
}

fn name_value(value: &str, range: &Range) -> Option<u32> {
    let lower = value.to_lowercase();
    range
        .names
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, v)| *v)
}

fn part(value: &str, range: &Range, separators: bool) -> bool {
    if name_value(value, range).is_some() || value == "*" {
        return true;
    }
    if value.contains(',') {
        return separators
            && value
                .split(',')
                .all(|v| !v.is_empty() && part(v, range, true));
    }
    if value.contains('/') {
        if !separators {
            return false;
        }
        let pieces: Vec<&str> = value.split('/').collect();
        if pieces.len() != 2 {
            return false;
        }
        let (start, step) = (pieces[0], pieces[1]);
        let n = js_num(step);
        if n.is_nan() || n <= 0.0 || start.is_empty() || step.is_empty() {
            return false;
        }
        return part(start, range, true) && part(step, range, false);
    }
    if value.contains('-') {
        if !separators {
            return false;
        }
        let pieces: Vec<&str> = value.split('-').collect();
        if pieces.len() != 2 || pieces[0].is_empty() || pieces[1].is_empty() {
            return false;
        }
        let num = |v: &str| name_value(v, range).map_or_else(|| js_num(v), f64::from);
        return part(pieces[0], range, false)
            && part(pieces[1], range, false)
            && num(pieces[1]) >= num(pieces[0]);
    }
    let n = js_num(value);
    !n.is_nan() && n >= range.min && n <= range.max
}

/// True when `cron` is a valid five-field schedule.
pub fn is_valid_cron(cron: &str) -> bool {
    // split on runs of spaces, keeping empty leading/trailing fields like JavaScript's split(/ +/)
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_space = false;
    for c in cron.chars() {
        if c == ' ' {
            if !prev_space {
                fields.push(std::mem::take(&mut cur));
            }
            prev_space = true;
        } else {
            cur.push(c);
            prev_space = false;
        }
    }
    fields.push(cur);
    if fields.len() != 5 {
        return false;
    }
    part(&fields[0], &MINUTE, true)
        && part(&fields[1], &HOUR, true)
        && part(&fields[2], &DOM, true)
        && part(&fields[3], &MONTH, true)
        && part(&fields[4], &DOW, true)
}

#[cfg(test)]
mod tests {
    use super::is_valid_cron;

    #[test]
    fn crons() {
        assert!(is_valid_cron("* * * * 5"));
        assert!(is_valid_cron("0 */12 * * *"));
        assert!(is_valid_cron("0 0 * JAN-MAR mon-fri"));
        assert!(is_valid_cron("0,30 1-5/2 1 1 0"));
        assert!(!is_valid_cron("* * * *"));
        assert!(!is_valid_cron("60 * * * *"));
        assert!(!is_valid_cron("* * * * 7"));
        assert!(!is_valid_cron("5-1 * * * *"));
    }

    /// Numbers as JavaScript's unary `+` reads them, as GitHub's TypeScript parser does.
    #[test]
    fn numbers_read_as_javascript_does() {
        for ok in [
            "+5 * * * *",
            "0x1f * * * *",
            "0b11 * * * *",
            "0o7 * * * *",
            "1e1 * * * *",
            "1. * * * *",
            ".5e1 * * * *",
            "*/0x2 * * * *",
        ] {
            assert!(is_valid_cron(ok), "{ok}");
        }
        for bad in [
            "0x * * * *",
            "0xg * * * *",
            "-0x1 * * * *",
            "1e * * * *",
            ". * * * *",
            "inf * * * *",
            "NaN * * * *",
            "Infinity * * * *",
            "5x * * * *",
        ] {
            assert!(!is_valid_cron(bad), "{bad}");
        }
        assert_eq!(super::js_num(" 12 "), 12.0);
        assert_eq!(super::js_num("-Infinity"), f64::NEG_INFINITY);
    }
}
