//! Resource quantities (`"500m"`, `"128Mi"`, `"1.5Gi"`, `"1e3"`): exact parsing into an
//! integer count of nano-units, comparison, and Kubernetes' canonical text form. No
//! floating point anywhere; values that do not fit are refused, never rounded off.
//! What a quantity means for a given resource (cpu, memory) is the caller's business.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Nano-units per unit: quantities are stored as an integer number of 10⁻⁹.
const NANO: i128 = 1_000_000_000;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow `<sign><digits>[.<digits>]<suffix>`.
    #[error(
        "{input:?} is not a quantity: expected e.g. \"500m\", \"128Mi\", \"1.5Gi\" or \"1e3\""
    )]
    Syntax {
        /// The text as given.
        input: String,
    },
    /// The value is too large to be represented exactly.
    #[error("{input:?} is too large: quantities must stay below about 1.7e29")]
    Overflow {
        /// The text as given.
        input: String,
    },
}

/// Result of quantity parsing.
pub type Result<T> = std::result::Result<T, QuantityError>;

/// How a quantity was written; its canonical form keeps the same style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySi,
    /// Powers of 1000: `n`, `u`, `m`, (none), `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSi,
    /// A decimal exponent: `1e3`, `5E-3`.
    DecimalExponent,
}

/// An exact quantity, such as `500m` of cpu or `128Mi` of memory.
///
/// Equality and ordering compare values only: `1Gi == 1024Mi` and `1 == 1000m`.
/// Precision below 1n (10⁻⁹) is rounded up, as Kubernetes does.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parses Kubernetes quantity syntax: an optional sign, a decimal number and at
    /// most one suffix (binary SI, decimal SI or a decimal exponent).
    pub fn parse(input: &str) -> Result<Quantity> {
        let syntax = || QuantityError::Syntax {
            input: input.to_string(),
        };
        let overflow = || QuantityError::Overflow {
            input: input.to_string(),
        };
        let (negative, rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        if frac_part.contains('.') {
            return Err(syntax());
        }
        let (format, base2_power, mut exp10) = parse_suffix(suffix).ok_or_else(syntax)?;

        // Trailing fraction zeros change nothing and would only risk overflow.
        let frac_part = frac_part.trim_end_matches('0');
        let mut digits: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(i128::from(c - b'0')))
                .ok_or_else(overflow)?;
        }
        let frac_len = i64::try_from(frac_part.len()).map_err(|_| overflow())?;
        exp10 = exp10.checked_sub(frac_len).ok_or_else(overflow)?;

        // value = digits * 2^base2_power * 10^exp10; nanos = value * 10^9.
        let mut nanos = digits
            .checked_mul(1i128.checked_shl(base2_power).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let scale = exp10.checked_add(9).ok_or_else(overflow)?;
        if digits != 0 {
            if scale >= 0 {
                let factor = pow10(scale).ok_or_else(overflow)?;
                nanos = nanos.checked_mul(factor).ok_or_else(overflow)?;
            } else {
                // Round up what is finer than a nano-unit (Kubernetes does the same).
                nanos = match pow10(-scale) {
                    Some(divisor) => nanos / divisor + i128::from(nanos % divisor != 0),
                    None => 1,
                };
            }
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// A quantity of whole units, written in decimal SI.
    pub fn from_units(units: i64) -> Quantity {
        Quantity {
            nanos: i128::from(units) * NANO,
            format: Format::DecimalSi,
        }
    }

    /// A quantity of thousandths (millicores for cpu), written in decimal SI.
    pub fn from_millis(millis: i64) -> Quantity {
        Quantity {
            nanos: i128::from(millis) * 1_000_000,
            format: Format::DecimalSi,
        }
    }

    /// How the quantity was written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value in thousandths, rounded up (cpu: millicores); saturates at the `i64`
    /// bounds.
    pub fn as_millis(&self) -> i64 {
        saturate(div_ceil(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (memory and storage: bytes); saturates at
    /// the `i64` bounds.
    pub fn as_bytes(&self) -> i64 {
        saturate(div_ceil(self.nanos, NANO))
    }

    /// The exact value in nano-units (10⁻⁹).
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The sum, in this quantity's format; `None` on overflow.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: self.format,
        })
    }
}

/// `(format, power of two, power of ten)` for a suffix.
fn parse_suffix(suffix: &str) -> Option<(Format, u32, i64)> {
    let binary = |p: u32| Some((Format::BinarySi, p * 10, 0));
    let decimal = |e: i64| Some((Format::DecimalSi, 0, e));
    match suffix {
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let exp = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents this large overflow (or round up to 1n) anyway; clamping keeps
            // the arithmetic in parse() simple and its verdict the same.
            let e: i64 = exp.parse().unwrap_or(0).clamp(-1_000_000, 1_000_000);
            let e = if digits.len() > 7 {
                if exp.starts_with('-') {
                    -1_000_000
                } else {
                    1_000_000
                }
            } else {
                e
            };
            Some((Format::DecimalExponent, 0, e))
        }
    }
}

fn pow10(exp: i64) -> Option<i128> {
    10i128.checked_pow(u32::try_from(exp).ok()?)
}

fn div_ceil(n: i128, d: i128) -> i128 {
    n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0)
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form: the format the quantity was written in, the largest
    /// suffix that keeps the number an integer (`1.5Gi` → `1536Mi`, `0.5` → `500m`,
    /// `1000` → `1k`). Binary values that are not whole multiples of 1024 fall back to
    /// decimal SI, as in Kubernetes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let nano = NANO.unsigned_abs();
        if self.format == Format::BinarySi && abs.is_multiple_of(nano) && abs / nano >= 1024 {
            let mut units = abs / nano;
            let mut power = 0;
            while power < 6 && units.is_multiple_of(1024) {
                units /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{sign}{units}{suffix}");
        }
        // Decimal: the largest exponent (a multiple of 3, from -9) dividing the value.
        let mut mantissa = abs;
        let mut exp: i32 = -9;
        while mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exp {
                0 => write!(f, "{sign}{mantissa}"),
                e => write!(f, "{sign}{mantissa}e{e}"),
            };
        }
        // Decimal SI suffixes stop at E (10^18); larger values keep more digits.
        while exp > 18 {
            mantissa *= 1000;
            exp -= 3;
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Quantity> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_exact_values() {
        for (input, nanos) in [
            ("500m", 500_000_000i128),
            ("128Mi", 128 * 1024 * 1024 * NANO),
            ("1.5Gi", 3 * 512 * 1024 * 1024 * NANO),
            ("1e3", 1000 * NANO),
            ("1E3", 1000 * NANO),
            ("2", 2 * NANO),
            ("0.1", 100_000_000),
            (".5", 500_000_000),
            ("5.", 5 * NANO),
            ("1n", 1),
            ("1u", 1000),
            ("1k", 1000 * NANO),
            ("1M", 1_000_000 * NANO),
            ("1G", 1_000_000_000 * NANO),
            ("1T", 1_000_000_000_000 * NANO),
            ("1P", 1_000_000_000_000_000 * NANO),
            ("1E", 1_000_000_000_000_000_000 * NANO),
            ("1Ki", 1024 * NANO),
            ("1Ei", (1i128 << 60) * NANO),
            ("-1", -NANO),
            ("+3", 3 * NANO),
            ("5e-3", 5_000_000),
            ("1.000000000000000000000000000000000000000000", NANO),
            ("0", 0),
            ("0.0Gi", 0),
            ("00012", 12 * NANO),
        ] {
            assert_eq!(q(input).as_nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn precision_below_a_nano_rounds_up() {
        assert_eq!(q("0.1n").as_nanos(), 1);
        assert_eq!(q("1e-12").as_nanos(), 1);
        assert_eq!(q("1.0000000001").as_nanos(), NANO + 1);
        assert_eq!(q("1e-999").as_nanos(), 1);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for input in [
            "", "m", "-", ".", "1..2", "1.2.3", "1 Gi", " 1", "1gi", "1Kb", "1KiB", "Mi", "1e",
            "1e+", "1ex", "0x10", "1,5", "--1", "1m1", "1e3m",
        ] {
            assert!(
                matches!(Quantity::parse(input), Err(QuantityError::Syntax { .. })),
                "{input:?} should be a syntax error"
            );
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        for input in [
            "1e30",
            "100000000000000000000000000000000000000000",
            "200000000000Ei",
            "1e999",
            "1e5000",
            "1e99999999999999999999",
        ] {
            assert!(
                matches!(Quantity::parse(input), Err(QuantityError::Overflow { .. })),
                "{input} should overflow"
            );
        }
        // The largest supported range still works: exabytes of memory.
        assert_eq!(q("7Ei").as_bytes(), 7 << 60);
        assert_eq!(q("1e-99999999999999999999").as_nanos(), 1);
    }

    #[test]
    fn canonical_form_matches_kubernetes() {
        for (input, canonical) in [
            ("500m", "500m"),
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("2", "2"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("128Mi", "128Mi"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("1e-3", "1e-3"),
            ("5e-3", "5e-3"),
            ("0.1Ki", "102400m"),
            ("1E", "1E"),
            ("1000E", "1000E"),
            ("0", "0"),
            ("0Mi", "0"),
            ("-500m", "-500m"),
            ("-1Gi", "-1Gi"),
            ("12n", "12n"),
            ("1000u", "1m"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
            assert_eq!(q(canonical), q(input), "canonical {canonical} parses back");
        }
    }

    #[test]
    fn comparison_is_by_value() {
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1e3"), q("1k"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
        assert!(q("999m") < q("1"));
        let mut v = [q("1Gi"), q("1"), q("100m"), q("1Ki"), q("1k")];
        v.sort();
        let sorted: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(sorted, ["100m", "1", "1k", "1Ki", "1Gi"]);
    }

    #[test]
    fn millis_and_bytes_round_up() {
        assert_eq!(q("500m").as_millis(), 500);
        assert_eq!(q("2").as_millis(), 2000);
        assert_eq!(q("0.1m").as_millis(), 1);
        assert_eq!(q("128Mi").as_bytes(), 134_217_728);
        assert_eq!(q("1.5Gi").as_bytes(), 1_610_612_736);
        assert_eq!(q("1500m").as_bytes(), 2);
        assert_eq!(q("1e3").as_bytes(), 1000);
        assert_eq!(q("100Ei").as_bytes(), i64::MAX, "saturates");
        assert_eq!(Quantity::from_millis(250), q("250m"));
        assert_eq!(Quantity::from_units(3), q("3"));
        assert_eq!(q("1").checked_add(&q("500m")), Some(q("1500m")));
    }
}
