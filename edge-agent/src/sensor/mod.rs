//! Sensors: drivers against the `embedded-hal` 1.0 traits, and what the
//! agent reads from them.
//!
//! * [`bme280`]: Bosch BME280 over I2C, from its datasheet.
//! * [`Replay`]: readings from a JSON-lines file (bench rigs, demos, and
//!   builds without the `linux` feature).
//! * With the `linux` feature, [`open_bme280_linux`] opens `/dev/i2c-N`
//!   through `linux-embedded-hal`.

pub mod bme280;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One environmental reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// °C.
    pub temperature_c: f64,
    /// Pa.
    pub pressure_pa: f64,
    /// %RH, if the sensor measures it.
    pub humidity_pct: Option<f64>,
}

impl From<bme280::Measurement> for Reading {
    fn from(m: bme280::Measurement) -> Self {
        Reading {
            temperature_c: m.temperature_c(),
            pressure_pa: m.pressure_pa(),
            humidity_pct: Some(m.humidity_pct()),
        }
    }
}

/// Something the agent can read.
pub trait Sensor {
    /// Takes one reading.
    fn read(&mut self) -> Result<Reading>;
}

impl<I, D> Sensor for bme280::Bme280<I, D>
where
    I: embedded_hal::i2c::I2c,
    D: embedded_hal::delay::DelayNs,
{
    fn read(&mut self) -> Result<Reading> {
        self.measure()
            .map(Reading::from)
            .map_err(|e| Error::Sensor(format!("BME280: {e}")))
    }
}

impl<S: Sensor + ?Sized> Sensor for Box<S> {
    fn read(&mut self) -> Result<Reading> {
        (**self).read()
    }
}

/// Readings replayed from a JSON-lines file of [`Reading`]s, in a loop.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    readings: Vec<Reading>,
    next: usize,
}

/// Most readings a replay file may hold.
const MAX_REPLAY: usize = 100_000;

impl Replay {
    /// Loads `path` (at most 100,000 lines).
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let readings = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(MAX_REPLAY + 1)
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<Reading>>>()?;
        if readings.is_empty() || readings.len() > MAX_REPLAY {
            return Err(Error::file(
                path,
                format!("must hold 1..={MAX_REPLAY} readings"),
            ));
        }
        Ok(Replay {
            path: path.to_owned(),
            readings,
            next: 0,
        })
    }
}

impl Sensor for Replay {
    fn read(&mut self) -> Result<Reading> {
        let r = self
            .readings
            .get(self.next)
            .copied()
            .ok_or_else(|| Error::Sensor(format!("{}: no readings", self.path.display())))?;
        self.next = (self.next + 1) % self.readings.len();
        Ok(r)
    }
}

/// A BME280 on a Linux I2C bus (`/dev/i2c-1`).
#[cfg(feature = "linux")]
pub fn open_bme280_linux(bus: &Path, address: u8) -> Result<Box<dyn Sensor>> {
    let i2c = linux_embedded_hal::I2cdev::new(bus).map_err(|e| Error::file(bus, e))?;
    let s = bme280::Bme280::new(
        i2c,
        linux_embedded_hal::Delay,
        address,
        bme280::Settings::default(),
    )
    .map_err(|e| Error::Sensor(format!("BME280 at {}:{address:#04x}: {e}", bus.display())))?;
    Ok(Box::new(s))
}
