//! Money as CHIP sends it: integer amounts in minor units (sen, cents) beside an ISO 4217 code.

use std::fmt;

/// An amount of money in minor units with its currency, for showing to people.
///
/// CHIP's payloads carry amounts as integers in the currency's minor unit (`200` MYR is RM 2.00).
/// `Display` writes the amount in major units with the currency's number of decimals (2 for most,
/// 0 for JPY or KRW, 3 for KWD or BHD), with `RM` for ringgit and the ISO code otherwise.
///
/// ```
/// use chip_gate::Amount;
///
/// assert_eq!(Amount::new(200, "MYR").to_string(), "RM 2.00");
/// assert_eq!(Amount::new(-1050, "EUR").to_string(), "EUR -10.50");
/// assert_eq!(Amount::new(1500, "JPY").to_string(), "JPY 1500");
/// assert_eq!(Amount::new(1234, "KWD").to_string(), "KWD 1.234");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Amount {
    /// The amount in minor units, as CHIP sends it.
    pub minor: i64,
    /// The ISO 4217 currency code, e.g. `MYR`.
    pub currency: String,
}

impl Amount {
    /// An amount of `minor` units of `currency`.
    pub fn new(minor: i64, currency: impl Into<String>) -> Self {
        Amount {
            minor,
            currency: currency.into(),
        }
    }

    /// How many decimals the currency's minor unit has (ISO 4217): 2 unless the code is one of the
    /// common exceptions.
    pub fn decimals(&self) -> u32 {
        match self.currency.to_ascii_uppercase().as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.currency.to_ascii_uppercase();
        let label = if code == "MYR" { "RM" } else { code.as_str() };
        let decimals = self.decimals();
        let sign = if self.minor < 0 { "-" } else { "" };
        let magnitude = self.minor.unsigned_abs();
        if decimals == 0 {
            return write!(f, "{label} {sign}{magnitude}");
        }
        let scale = 10u64.pow(decimals);
        write!(
            f,
            "{label} {sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = decimals as usize
        )
    }
}
