//! The subset of Python's `ast.literal_eval` that lm-eval applies to rendered `doc_to_choice`
//! and `doc_to_target` strings (`lm_eval/api/task.py`): lists, tuples (as lists), dicts with
//! string keys, strings (all quote styles, `r`/`u` prefixes, every escape but `\N{…}`,
//! implicit concatenation), integers (with `_`, `0x`/`0o`/`0b`), floats, signs, `True`, `False`
//! and `None`.
use serde_json::{Map, Number, Value};

/// Text that is not a Python literal `ast.literal_eval` would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LiteralError(String);

/// Parses `text` as one Python literal.
pub fn literal_eval(text: &str) -> Result<Value, LiteralError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let value = parser.value().map_err(LiteralError)?;
    parser.skip_space();
    match parser.peek() {
        None => Ok(value),
        Some(c) => Err(LiteralError(
            parser.error(&format!("unexpected `{c}` after the literal")),
        )),
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, message: &str) -> String {
        format!("not a Python literal: {message} at character {}", self.pos)
    }

    fn skip_space(&mut self) {
        while self
            .peek()
            .is_some_and(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c'))
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.peek() {
            Some('[') => self.sequence('[', ']').map(Value::Array),
            Some('(') => self.sequence('(', ')').map(Value::Array),
            Some('{') => self.dict(),
            Some('-' | '+') => {
                let negative = self.peek() == Some('-');
                self.pos += 1;
                self.skip_space();
                match self.peek() {
                    Some(c) if c.is_ascii_digit() || c == '.' => self.number(negative),
                    _ => Err(self.error("a sign must precede a number")),
                }
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(false),
            Some(c) if c == '\'' || c == '"' => self.strings(),
            Some(c) if c.is_alphabetic() || c == '_' => self.word(),
            Some(c) => Err(self.error(&format!("unexpected `{c}`"))),
            None => Err(self.error("empty input")),
        }
    }

    /// Comma-separated values up to `close`, a trailing comma allowed.
    fn sequence(&mut self, open: char, close: char) -> Result<Vec<Value>, String> {
        self.eat(open);
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            items.push(self.value()?);
            if !self.eat(',') {
                return if self.eat(close) {
                    Ok(items)
                } else {
                    Err(self.error(&format!("expected `,` or `{close}`")))
                };
            }
        }
    }

    fn dict(&mut self) -> Result<Value, String> {
        self.eat('{');
        let mut map = Map::new();
        loop {
            if self.eat('}') {
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(key) => key,
                _ => return Err(self.error("dict keys must be strings")),
            };
            if !self.eat(':') {
                return Err(self.error("expected `:`"));
            }
            let value = self.value()?;
            map.insert(key, value);
            if !self.eat(',') {
                return if self.eat('}') {
                    Ok(Value::Object(map))
                } else {
                    Err(self.error("expected `,` or `}`"))
                };
            }
        }
    }

    /// `True`, `False`, `None`, or a prefixed string such as `r'…'`.
    fn word(&mut self) -> Result<Value, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        match word.as_str() {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::Null),
            prefix
                if matches!(self.peek(), Some('\'' | '"'))
                    && ["r", "u", "R", "U"].contains(&prefix) =>
            {
                self.pos = start;
                self.strings()
            }
            _ => Err(self.error(&format!("`{word}` is not a literal"))),
        }
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Result<Value, String> {
        let mut text = self.string()?;
        loop {
            self.skip_space();
            let prefixed = matches!(self.peek(), Some('r' | 'R' | 'u' | 'U'))
                && matches!(self.chars.get(self.pos + 1), Some('\'' | '"'));
            if !(prefixed || matches!(self.peek(), Some('\'' | '"'))) {
                return Ok(Value::String(text));
            }
            text.push_str(&self.string()?);
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let mut raw = false;
        if let Some(prefix @ ('r' | 'R' | 'u' | 'U')) = self.peek() {
            raw = matches!(prefix, 'r' | 'R');
            self.pos += 1;
        }
        let quote = self.peek().ok_or_else(|| self.error("expected a quote"))?;
        let triple = self.chars.get(self.pos + 1) == Some(&quote)
            && self.chars.get(self.pos + 2) == Some(&quote);
        self.pos += if triple { 3 } else { 1 };
        let mut text = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            if c == quote
                && (!triple
                    || (self.chars.get(self.pos + 1) == Some(&quote)
                        && self.chars.get(self.pos + 2) == Some(&quote)))
            {
                self.pos += if triple { 3 } else { 1 };
                return Ok(text);
            }
            if c == '\n' && !triple {
                return Err(self.error("newline in a single-quoted string"));
            }
            self.pos += 1;
            if c != '\\' {
                text.push(c);
                continue;
            }
            let escaped = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            self.pos += 1;
            if raw {
                text.push('\\');
                text.push(escaped);
                continue;
            }
            self.escape(escaped, &mut text)?;
        }
    }

    /// The character(s) of the escape `\<escaped>…`.
    fn escape(&mut self, escaped: char, text: &mut String) -> Result<(), String> {
        let simple = match escaped {
            '\n' => Some(None),
            '\\' | '\'' | '"' => Some(Some(escaped)),
            'a' => Some(Some('\x07')),
            'b' => Some(Some('\x08')),
            'f' => Some(Some('\x0c')),
            'n' => Some(Some('\n')),
            'r' => Some(Some('\r')),
            't' => Some(Some('\t')),
            'v' => Some(Some('\x0b')),
            _ => None,
        };
        if let Some(c) = simple {
            text.extend(c);
            return Ok(());
        }
        let code = match escaped {
            '0'..='7' => {
                let mut code = escaped.to_digit(8).unwrap_or_default();
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(digit) => {
                            code = code * 8 + digit;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                code
            }
            'x' => self.hex(2)?,
            'u' => self.hex(4)?,
            'U' => self.hex(8)?,
            'N' => return Err(self.error("`\\N{…}` escapes are not supported")),
            other => {
                text.push('\\');
                text.push(other);
                return Ok(());
            }
        };
        text.push(char::from_u32(code).ok_or_else(|| self.error("invalid code point"))?);
        Ok(())
    }

    fn hex(&mut self, digits: usize) -> Result<u32, String> {
        let end = self.pos + digits;
        let hex: String = self
            .chars
            .get(self.pos..end)
            .unwrap_or_default()
            .iter()
            .collect();
        let code = u32::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == digits)
            .ok_or_else(|| self.error("truncated \\x, \\u or \\U escape"))?;
        self.pos = end;
        Ok(code)
    }

    fn number(&mut self, negative: bool) -> Result<Value, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| {
            c.is_ascii_alphanumeric()
                || c == '.'
                || c == '_'
                || ((c == '-' || c == '+') && matches!(self.chars[self.pos - 1], 'e' | 'E'))
        }) {
            self.pos += 1;
        }
        let written: String = self.chars[start..self.pos]
            .iter()
            .filter(|&&c| c != '_')
            .collect();
        let lower = written.to_ascii_lowercase();
        let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
            .into_iter()
            .find(|(prefix, _)| lower.starts_with(prefix));
        let integer = match radix {
            Some((prefix, radix)) => i64::from_str_radix(&lower[prefix.len()..], radix).ok(),
            None if lower.bytes().all(|b| b.is_ascii_digit()) => {
                if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|b| b != b'0') {
                    return Err(self.error("leading zeros in an integer"));
                }
                lower.parse::<i64>().ok()
            }
            None => None,
        };
        if let Some(n) = integer {
            return Ok(Value::from(if negative { -n } else { n }));
        }
        if radix.is_some() || lower.ends_with('j') || lower.contains("inf") || lower.contains("nan")
        {
            return Err(self.error(&format!("unsupported number `{written}`")));
        }
        let x: f64 = lower
            .parse()
            .map_err(|_| self.error(&format!("invalid number `{written}`")))?;
        Number::from_f64(if negative { -x } else { x })
            .map(Value::Number)
            .ok_or_else(|| self.error("non-finite float"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_python_literals() {
        let cases = [
            ("['a', \"b\", 'it\\'s']", json!(["a", "b", "it's"])),
            ("('x',)", json!(["x"])),
            (
                "[1, -2, 3.5, 1e3, 0x10, 1_000, True, False, None]",
                json!([1, -2, 3.5, 1000.0, 16, 1000, true, false, null]),
            ),
            ("{'a': [1], \"b\": {}}", json!({"a": [1], "b": {}})),
            (
                r"'\t\n\\ \x41\u00e9\U0001F600 \101'",
                json!("\t\n\\ Aé😀 A"),
            ),
            (r"r'\n' 'x' u'y'", json!("\\nxy")),
            ("'''a'b\nc'''", json!("a'b\nc")),
            ("  [ ]  ", json!([])),
            (r"'\q'", json!("\\q")),
        ];
        for (text, expected) in cases {
            assert_eq!(literal_eval(text).unwrap(), expected, "{text}");
        }
        for bad in [
            "[1, 2",
            "'open",
            "foo",
            "[1] x",
            "{1: 2}",
            "01",
            r"'\N{DASH}'",
        ] {
            assert!(literal_eval(bad).is_err(), "{bad}");
        }
    }
}
