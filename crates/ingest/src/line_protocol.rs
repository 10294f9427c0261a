//! InfluxDB line protocol, so Telegraf and InfluxDB client libraries can
//! send to Braid with a changed URL.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`
//!
//! Mapping to readings, one reading per numeric field:
//! - `device_id`: the tag `device_id`, else `device`, else `host` (Telegraf's
//!   default tag); that tag is not repeated in `tags`. A line with none of
//!   them is refused.
//! - `metric`: the measurement for a field named `value`, otherwise
//!   `<measurement>_<field>` (`cpu usage_idle=1` becomes `cpu_usage_idle`).
//! - `value`: floats as written, integers (`1i`), unsigned (`1u`), booleans
//!   as 1 and 0. String fields are refused: Braid stores numbers.
//! - `seq`: an integer field named `seq` is the sequence number of every
//!   reading of its line, not a reading itself.
//! - `ts`: the timestamp in the request's `precision` (`ns` by default, as
//!   InfluxDB), converted to milliseconds; a line without one gets the time
//!   it was accepted.
//! - every other tag becomes a tag.

use std::collections::BTreeMap;

use braid_core::{FieldError, Reading};

/// Units of line-protocol timestamps (InfluxDB's `precision` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes (InfluxDB 1.x).
    Minutes,
    /// Hours (InfluxDB 1.x).
    Hours,
}

impl Precision {
    /// Parses InfluxDB 1.x (`n`, `u`, `ms`, `s`, `m`, `h`) and 2.x (`ns`,
    /// `us`, `ms`, `s`) spellings.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" | "n" => Self::Nanoseconds,
            "us" | "u" | "µ" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    fn to_ms(self, t: i64) -> Option<i64> {
        match self {
            Self::Nanoseconds => Some(t.div_euclid(1_000_000)),
            Self::Microseconds => Some(t.div_euclid(1_000)),
            Self::Milliseconds => Some(t),
            Self::Seconds => t.checked_mul(1_000),
            Self::Minutes => t.checked_mul(60_000),
            Self::Hours => t.checked_mul(3_600_000),
        }
    }
}

/// Parses one line (not a comment, not blank) into its readings.
pub fn parse_line(
    line: &str,
    precision: Precision,
    now_ms: i64,
) -> Result<Vec<Reading>, FieldError> {
    let mut p = Cursor {
        s: line.as_bytes(),
        i: 0,
    };
    let measurement = p.token(b", ", "measurement")?;
    if measurement.is_empty() {
        return Err(FieldError::new("measurement", "is missing"));
    }
    let mut tags = BTreeMap::new();
    while p.peek() == Some(b',') {
        p.i += 1;
        let k = p.token(b"= ,", "tag key")?;
        p.expect(b'=', "tag")?;
        let v = p.token(b", ", "tag value")?;
        if k.is_empty() || v.is_empty() {
            return Err(FieldError::new(
                "tags",
                format!("tag `{k}={v}` needs a key and a value"),
            ));
        }
        tags.insert(k, v);
    }
    p.expect(b' ', "fields")?;
    let mut fields: Vec<(String, FieldValue)> = Vec::new();
    loop {
        let k = p.token(b"= ,", "field key")?;
        if k.is_empty() {
            return Err(FieldError::new("fields", "a field has no key"));
        }
        p.expect(b'=', "field")?;
        let v = p.field_value(&k)?;
        fields.push((k, v));
        match p.peek() {
            Some(b',') => p.i += 1,
            _ => break,
        }
    }
    let ts = match p.peek() {
        None => now_ms,
        Some(b' ') => {
            p.i += 1;
            let rest = std::str::from_utf8(&p.s[p.i..]).unwrap_or("").trim_end();
            let t: i64 = rest.parse().map_err(|_| {
                FieldError::new("timestamp", format!("`{rest}` is not an integer timestamp"))
            })?;
            precision
                .to_ms(t)
                .ok_or_else(|| FieldError::new("timestamp", format!("{t} is out of range")))?
        }
        Some(c) => {
            return Err(FieldError::new(
                "fields",
                format!("unexpected `{}` after the fields", c as char),
            ));
        }
    };
    let device_key = ["device_id", "device", "host"]
        .into_iter()
        .find(|k| tags.contains_key(*k))
        .ok_or_else(|| {
            FieldError::new(
                "device_id",
                "line protocol needs a `device_id` (or `device` or `host`) tag",
            )
        })?;
    let device_id = tags.remove(device_key).unwrap_or_default();
    let mut seq = None;
    let mut readings = Vec::with_capacity(fields.len());
    for (k, v) in &fields {
        if k == "seq" {
            match v {
                FieldValue::Int(n) if *n >= 0 => seq = Some(*n as u64),
                FieldValue::UInt(n) => seq = Some(*n),
                _ => {
                    return Err(FieldError::new(
                        "seq",
                        "must be a non-negative integer (`7i` or `7u`)",
                    ));
                }
            }
        }
    }
    for (k, v) in fields {
        if k == "seq" {
            continue;
        }
        let value = match v {
            FieldValue::Float(f) => f,
            FieldValue::Int(n) => n as f64,
            FieldValue::UInt(n) => n as f64,
            FieldValue::Bool(b) => f64::from(u8::from(b)),
            FieldValue::Str => {
                return Err(FieldError::new(
                    k,
                    "is a string field; Braid stores numbers",
                ));
            }
        };
        let metric = if k == "value" {
            measurement.clone()
        } else {
            format!("{measurement}_{k}")
        };
        readings.push(Reading {
            device_id: device_id.clone(),
            metric,
            ts,
            value,
            seq,
            tags: tags.clone(),
        });
    }
    if readings.is_empty() {
        return Err(FieldError::new("fields", "no numeric field besides `seq`"));
    }
    Ok(readings)
}

enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), FieldError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(FieldError::new(
                what,
                format!("expected `{}` at column {}", c as char, self.i + 1),
            ))
        }
    }

    /// Reads up to an unescaped stop byte; `\` escapes the next byte.
    fn token(&mut self, stops: &[u8], what: &str) -> Result<String, FieldError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'\\' {
                match self.s.get(self.i + 1) {
                    Some(&n) if matches!(n, b'\\' | b' ' | b',' | b'=' | b'"') => {
                        out.push(n);
                        self.i += 2;
                    }
                    _ => {
                        out.push(c);
                        self.i += 1;
                    }
                }
                continue;
            }
            if stops.contains(&c) || c == b'\n' || c == b'\r' {
                break;
            }
            out.push(c);
            self.i += 1;
        }
        String::from_utf8(out).map_err(|_| FieldError::new(what, "is not UTF-8"))
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue, FieldError> {
        if self.peek() == Some(b'"') {
            self.i += 1;
            while let Some(c) = self.peek() {
                self.i += 1;
                match c {
                    b'\\' => self.i += 1,
                    b'"' => return Ok(FieldValue::Str),
                    _ => {}
                }
            }
            return Err(FieldError::new(key, "has an unterminated string"));
        }
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b',' || c == b' ' {
                break;
            }
            self.i += 1;
        }
        let raw = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let bad = || FieldError::new(key, format!("`{raw}` is not a number, integer or boolean"));
        Ok(match raw {
            "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
            "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
            _ if raw.ends_with('i') => {
                FieldValue::Int(raw[..raw.len() - 1].parse().map_err(|_| bad())?)
            }
            _ if raw.ends_with('u') => {
                FieldValue::UInt(raw[..raw.len() - 1].parse().map_err(|_| bad())?)
            }
            _ => {
                let f: f64 = raw.parse().map_err(|_| bad())?;
                if !f.is_finite()
                    || raw.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
                {
                    return Err(bad());
                }
                FieldValue::Float(f)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_telegraf_line() {
        let rs = parse_line(
            "cpu,host=gw-1,zone=north usage_idle=97.5,usage_user=1i,seq=9u 1475567982000000000",
            Precision::Nanoseconds,
            0,
        )
        .unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].device_id, "gw-1");
        assert_eq!(rs[0].metric, "cpu_usage_idle");
        assert_eq!(rs[0].ts, 1_475_567_982_000);
        assert_eq!(rs[0].seq, Some(9));
        assert_eq!(rs[1].value, 1.0);
        assert_eq!(rs[0].tags.get("zone").map(String::as_str), Some("north"));
        assert!(!rs[0].tags.contains_key("host"));
    }

    #[test]
    fn escapes_value_fields_and_precision() {
        let rs = parse_line(
            r"my\ room,device_id=a\,b value=1.5,on=t 2",
            Precision::Seconds,
            0,
        )
        .unwrap();
        assert_eq!(rs[0].metric, "my room");
        assert_eq!(rs[0].device_id, "a,b");
        assert_eq!(rs[0].ts, 2000);
        assert_eq!(rs[1].metric, "my room_on");
        assert_eq!(rs[1].value, 1.0);
        let now = parse_line("t,device=d value=3", Precision::Nanoseconds, 77).unwrap();
        assert_eq!(now[0].ts, 77);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("m value=1", "device_id"),
            ("m,device=d status=\"ok\"", "status"),
            ("m,device=d value=abc", "value"),
            ("m,device=d value=1 12x", "timestamp"),
            ("m,device=d", "fields"),
            ("m,device=d seq=1.5,value=2", "seq"),
            ("m,device=d value=NaN", "value"),
        ];
        for (line, field) in cases {
            let e = parse_line(line, Precision::Nanoseconds, 0).unwrap_err();
            assert_eq!(e.field, field, "{line}: {e}");
        }
    }
}
