//! Bosch BME280 (temperature, pressure, humidity) over I2C, written from
//! the datasheet (BST-BME280-DS002, rev. 1.6); section numbers below are
//! that document's.
//!
//! Generic over the `embedded-hal` 1.0 [`I2c`] and [`DelayNs`] traits: on a
//! device `linux_embedded_hal::{I2cdev, Delay}` (feature `linux`), in tests
//! `embedded-hal-mock` transactions.
//!
//! The driver runs the sensor in forced mode (§3.3.3): each
//! [`Bme280::measure`] starts one conversion, waits the maximum
//! measurement time of Appendix B (§9.1), checks `status.measuring`, burst
//! reads the data registers (§4), and compensates with the integer
//! formulas of §4.2.3 (32-bit temperature and humidity, 64-bit pressure).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// I2C address with SDO to GND (§6.2).
pub const ADDRESS_PRIMARY: u8 = 0x76;
/// I2C address with SDO to VDDIO.
pub const ADDRESS_SECONDARY: u8 = 0x77;

/// Register map (§5.3, Table 18).
pub mod reg {
    /// `id`: chip identification, reads 0x60.
    pub const ID: u8 = 0xD0;
    /// `reset`: write 0xB6 for a power-on reset.
    pub const RESET: u8 = 0xE0;
    /// `calib00`..`calib25` start (dig_T1..dig_P9, dig_H1 at 0xA1).
    pub const CALIB_TP: u8 = 0x88;
    /// `calib26`..`calib41` start (dig_H2..dig_H6).
    pub const CALIB_H: u8 = 0xE1;
    /// `ctrl_hum`: humidity oversampling; takes effect at the next `ctrl_meas` write.
    pub const CTRL_HUM: u8 = 0xF2;
    /// `status`: bit 3 `measuring`, bit 0 `im_update`.
    pub const STATUS: u8 = 0xF3;
    /// `ctrl_meas`: temperature and pressure oversampling, mode.
    pub const CTRL_MEAS: u8 = 0xF4;
    /// `config`: standby, IIR filter, SPI 3-wire.
    pub const CONFIG: u8 = 0xF5;
    /// `press_msb`: start of the 8-byte data burst (press, temp, hum).
    pub const DATA: u8 = 0xF7;
}

/// Value of the `id` register (§5.4.1).
pub const CHIP_ID: u8 = 0x60;
/// The soft-reset command (§5.4.2).
pub const RESET_COMMAND: u8 = 0xB6;
/// Length of `calib00`..`calib25`.
const CALIB_TP_LEN: usize = 26;
/// Length of `calib26`..`calib32` (the humidity part that is used).
const CALIB_H_LEN: usize = 7;
/// Start-up time after a reset, 2 ms (§1, Table 1, t_startup).
const STARTUP_US: u32 = 2_000;
/// How often `status` is polled before giving up.
const MAX_POLLS: u32 = 10;

/// Oversampling of one quantity (§5.4.3 to §5.4.5): `osrs_x` field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Oversampling {
    /// ×1.
    X1 = 0b001,
    /// ×2.
    X2 = 0b010,
    /// ×4.
    X4 = 0b011,
    /// ×8.
    X8 = 0b100,
    /// ×16.
    X16 = 0b101,
}

impl Oversampling {
    fn factor(self) -> u32 {
        1 << (self as u32 - 1)
    }
}

/// Sensor settings. The default is the datasheet's "weather monitoring"
/// case (§3.5.1): forced mode, ×1 oversampling everywhere, filter off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Temperature oversampling.
    pub temperature: Oversampling,
    /// Pressure oversampling.
    pub pressure: Oversampling,
    /// Humidity oversampling.
    pub humidity: Oversampling,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            temperature: Oversampling::X1,
            pressure: Oversampling::X1,
            humidity: Oversampling::X1,
        }
    }
}

impl Settings {
    /// `ctrl_meas` for a forced-mode conversion: `osrs_t[7:5] osrs_p[4:2] mode[1:0] = 01`.
    pub fn ctrl_meas(&self) -> u8 {
        ((self.temperature as u8) << 5) | ((self.pressure as u8) << 2) | 0b01
    }

    /// Maximum measurement time in microseconds (§9.1, Appendix B):
    /// `1.25 + 2.3·osrs_t + (2.3·osrs_p + 0.575) + (2.3·osrs_h + 0.575)` ms.
    pub fn max_measurement_us(&self) -> u32 {
        1_250
            + 2_300 * self.temperature.factor()
            + 2_300 * self.pressure.factor()
            + 575
            + 2_300 * self.humidity.factor()
            + 575
    }
}

/// Trimming parameters (§4.2.2, Table 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Parses `calib00..25` (0x88..0xA1) and `calib26..32` (0xE1..0xE7).
    /// Words are little-endian; dig_H4 and dig_H5 are 12-bit signed values
    /// sharing 0xE5 (dig_H4 = 0xE4[7:0]·16 + 0xE5[3:0], dig_H5 = 0xE6·16 +
    /// 0xE5[7:4]).
    pub fn parse(tp: &[u8; CALIB_TP_LEN], h: &[u8; CALIB_H_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([tp[i], tp[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([tp[i], tp[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            // 0xA0 (tp[24]) is not used.
            h1: tp[25],
            h2: i16::from_le_bytes([h[0], h[1]]),
            h3: h[2],
            h4: (i16::from(h[3] as i8) * 16) | i16::from(h[4] & 0x0F),
            h5: (i16::from(h[5] as i8) * 16) | i16::from(h[4] >> 4),
            h6: h[6] as i8,
        }
    }

    /// `BME280_compensate_T_int32` (§4.2.3): temperature in 0.01 °C and
    /// `t_fine`, which pressure and humidity compensation take.
    ///
    /// The three compensations compute in `i128`: a damaged or hostile
    /// sensor cannot overflow them (the datasheet's 32/64-bit arithmetic
    /// would), and for every input where that arithmetic does not
    /// overflow the results are the same.
    pub fn compensate_temperature(&self, adc_t: i32) -> (i32, i32) {
        let (adc_t, t1) = (i128::from(adc_t), i128::from(self.t1));
        let var1 = (((adc_t >> 3) - (t1 << 1)) * i128::from(self.t2)) >> 11;
        let d = (adc_t >> 4) - t1;
        let var2 = (((d * d) >> 12) * i128::from(self.t3)) >> 14;
        let t_fine = clamp_i32(var1 + var2);
        (clamp_i32((i128::from(t_fine) * 5 + 128) >> 8), t_fine)
    }

    /// `BME280_compensate_P_int64` (§4.2.3): pressure in Pa as Q24.8
    /// (value / 256 = Pa). 0 when the divisor is 0 (the datasheet's guard).
    pub fn compensate_pressure(&self, adc_p: i32, t_fine: i32) -> u32 {
        let mut var1 = i128::from(t_fine) - 128_000;
        let mut var2 = var1 * var1 * i128::from(self.p6);
        var2 += (var1 * i128::from(self.p5)) << 17;
        var2 += i128::from(self.p4) << 35;
        var1 = ((var1 * var1 * i128::from(self.p3)) >> 8) + ((var1 * i128::from(self.p2)) << 12);
        var1 = (((1i128 << 47) + var1) * i128::from(self.p1)) >> 33;
        if var1 == 0 {
            return 0;
        }
        let mut p: i128 = 1_048_576 - i128::from(adc_p);
        // Bounded so that the squares below stay inside i128 (a valid
        // reading is far inside i64).
        p = ((((p << 31) - var2) * 3125) / var1).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let var1 = (i128::from(self.p9) * (p >> 13) * (p >> 13)) >> 25;
        let var2 = (i128::from(self.p8) * p) >> 19;
        p = ((p + var1 + var2) >> 8) + (i128::from(self.p7) << 4);
        p.clamp(0, i128::from(u32::MAX)) as u32
    }

    /// `bme280_compensate_H_int32` (§4.2.3): relative humidity as Q22.10
    /// (value / 1024 = %RH), clamped to 0..=100 %RH.
    pub fn compensate_humidity(&self, adc_h: i32, t_fine: i32) -> u32 {
        let h = |x: i16| i128::from(x);
        let mut v: i128 = i128::from(t_fine) - 76_800;
        v = ((((i128::from(adc_h) << 14) - (h(self.h4) << 20) - (h(self.h5) * v)) + 16_384) >> 15)
            * (((((((v * i128::from(self.h6)) >> 10)
                * (((v * i128::from(self.h3)) >> 11) + 32_768))
                >> 10)
                + 2_097_152)
                * h(self.h2)
                + 8_192)
                >> 14);
        // Bounded as above; a valid reading is far inside i64.
        v = v.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        v -= ((((v >> 15) * (v >> 15)) >> 7) * i128::from(self.h1)) >> 4;
        let v = v.clamp(0, 419_430_400);
        (v >> 12) as u32
    }
}

fn clamp_i32(v: i128) -> i32 {
    v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
}

/// One compensated measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Temperature in 0.01 °C.
    pub temperature_centi_c: i32,
    /// Pressure in Pa, Q24.8.
    pub pressure_q24_8: u32,
    /// Relative humidity in %, Q22.10.
    pub humidity_q22_10: u32,
}

impl Measurement {
    /// °C.
    pub fn temperature_c(&self) -> f64 {
        f64::from(self.temperature_centi_c) / 100.0
    }
    /// Pa.
    pub fn pressure_pa(&self) -> f64 {
        f64::from(self.pressure_q24_8) / 256.0
    }
    /// %RH.
    pub fn humidity_pct(&self) -> f64 {
        f64::from(self.humidity_q22_10) / 1024.0
    }
}

/// Driver errors.
#[derive(Debug, PartialEq, Eq)]
pub enum Bme280Error<E> {
    /// The bus failed.
    Bus(E),
    /// The `id` register did not read 0x60: another chip at that address.
    ChipId(u8),
    /// `status` still busy after the datasheet's maximum time.
    Timeout(&'static str),
    /// The data registers hold the "skipped" value (0x80000 / 0x8000).
    Skipped(&'static str),
}

impl<E: core::fmt::Debug> core::fmt::Display for Bme280Error<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Bme280Error::Bus(e) => write!(f, "I2C: {e:?}"),
            Bme280Error::ChipId(id) => write!(f, "chip id {id:#04x}, a BME280 reads 0x60"),
            Bme280Error::Timeout(what) => write!(f, "{what} did not finish in time"),
            Bme280Error::Skipped(what) => write!(f, "{what} measurement skipped"),
        }
    }
}

/// A BME280 on an I2C bus.
#[derive(Debug)]
pub struct Bme280<I, D> {
    i2c: I,
    delay: D,
    address: u8,
    calibration: Calibration,
    settings: Settings,
}

impl<I: I2c, D: DelayNs> Bme280<I, D> {
    /// Checks the chip id, resets the chip, waits for the trimming
    /// parameters to be copied (`status.im_update`), reads them, and writes
    /// `ctrl_hum` and `config`. Register sequence:
    /// `read id` → `write reset=0xB6` → wait 2 ms → `read status` until
    /// bit 0 clears → `read 0x88×26` → `read 0xE1×7` → `write ctrl_hum` →
    /// `write config=0`.
    pub fn new(
        i2c: I,
        delay: D,
        address: u8,
        settings: Settings,
    ) -> Result<Self, Bme280Error<I::Error>> {
        let mut s = Bme280 {
            i2c,
            delay,
            address,
            calibration: Calibration::default(),
            settings,
        };
        let id = s.read_u8(reg::ID)?;
        if id != CHIP_ID {
            return Err(Bme280Error::ChipId(id));
        }
        s.write(reg::RESET, RESET_COMMAND)?;
        s.delay.delay_us(STARTUP_US);
        s.wait_status(0b0000_0001, "NVM copy after reset")?;
        let mut tp = [0u8; CALIB_TP_LEN];
        s.read(reg::CALIB_TP, &mut tp)?;
        let mut h = [0u8; CALIB_H_LEN];
        s.read(reg::CALIB_H, &mut h)?;
        s.calibration = Calibration::parse(&tp, &h);
        s.write(reg::CTRL_HUM, s.settings.humidity as u8)?;
        // t_sb (unused in forced mode) 0, filter off, no 3-wire SPI.
        s.write(reg::CONFIG, 0)?;
        Ok(s)
    }

    /// The trimming parameters read at start.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// One forced-mode conversion: `write ctrl_meas` → wait the maximum
    /// measurement time → `read status` until bit 3 clears → `read 0xF7×8`
    /// → compensate.
    pub fn measure(&mut self) -> Result<Measurement, Bme280Error<I::Error>> {
        self.write(reg::CTRL_MEAS, self.settings.ctrl_meas())?;
        self.delay.delay_us(self.settings.max_measurement_us());
        self.wait_status(0b0000_1000, "conversion")?;
        let mut d = [0u8; 8];
        self.read(reg::DATA, &mut d)?;
        let adc_p = (i32::from(d[0]) << 12) | (i32::from(d[1]) << 4) | (i32::from(d[2]) >> 4);
        let adc_t = (i32::from(d[3]) << 12) | (i32::from(d[4]) << 4) | (i32::from(d[5]) >> 4);
        let adc_h = (i32::from(d[6]) << 8) | i32::from(d[7]);
        if adc_t == 0x80000 {
            return Err(Bme280Error::Skipped("temperature"));
        }
        if adc_p == 0x80000 {
            return Err(Bme280Error::Skipped("pressure"));
        }
        if adc_h == 0x8000 {
            return Err(Bme280Error::Skipped("humidity"));
        }
        let c = &self.calibration;
        let (t, t_fine) = c.compensate_temperature(adc_t);
        Ok(Measurement {
            temperature_centi_c: t,
            pressure_q24_8: c.compensate_pressure(adc_p, t_fine),
            humidity_q22_10: c.compensate_humidity(adc_h, t_fine),
        })
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I, D) {
        (self.i2c, self.delay)
    }

    fn wait_status(&mut self, mask: u8, what: &'static str) -> Result<(), Bme280Error<I::Error>> {
        for _ in 0..MAX_POLLS {
            if self.read_u8(reg::STATUS)? & mask == 0 {
                return Ok(());
            }
            self.delay.delay_us(1_000);
        }
        Err(Bme280Error::Timeout(what))
    }

    fn read(&mut self, register: u8, buf: &mut [u8]) -> Result<(), Bme280Error<I::Error>> {
        self.i2c
            .write_read(self.address, &[register], buf)
            .map_err(Bme280Error::Bus)
    }

    fn read_u8(&mut self, register: u8) -> Result<u8, Bme280Error<I::Error>> {
        let mut b = [0u8; 1];
        self.read(register, &mut b)?;
        Ok(b[0])
    }

    fn write(&mut self, register: u8, value: u8) -> Result<(), Bme280Error<I::Error>> {
        self.i2c
            .write(self.address, &[register, value])
            .map_err(Bme280Error::Bus)
    }
}
