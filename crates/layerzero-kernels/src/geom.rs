//! Shape bookkeeping shared by every convolution kernel.

use crate::error::KernelError;

/// Geometry of an NCHW convolution with a square stride and symmetric zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (all four sides).
    pub pad: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

impl ConvGeom {
    /// Validates the dimensions of an input `x` (N, Cin, H, W) and weight `w` (Cout, Cin, KH, KW).
    pub fn new(
        op: &'static str,
        x: &[usize],
        w: &[usize],
        stride: usize,
        pad: usize,
    ) -> Result<Self, KernelError> {
        let &[n, cin, h, wd] = x else {
            return Err(KernelError::shape(
                op,
                format!("input must be rank 4 (N, C, H, W), got {x:?}"),
            ));
        };
        let &[cout, cin_w, kh, kw] = w else {
            return Err(KernelError::shape(
                op,
                format!("weight must be rank 4 (Cout, Cin, KH, KW), got {w:?}"),
            ));
        };
        if cin != cin_w {
            return Err(KernelError::shape(
                op,
                format!("input has {cin} channels but weight expects {cin_w} (x {x:?}, w {w:?})"),
            ));
        }
        if stride == 0 {
            return Err(KernelError::shape(op, "stride must be at least 1"));
        }
        if kh == 0 || kw == 0 || cout == 0 || cin == 0 {
            return Err(KernelError::shape(
                op,
                format!("empty kernel or channel dimension (x {x:?}, w {w:?})"),
            ));
        }
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            return Err(KernelError::shape(
                op,
                format!("kernel {kh}x{kw} larger than padded input {h}x{wd} (padding {pad})"),
            ));
        }
        let ho = (h + 2 * pad - kh) / stride + 1;
        let wo = (wd + 2 * pad - kw) / stride + 1;
        Ok(Self {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho,
            wo,
        })
    }

    /// Reduction length of the implicit GEMM: Cin·KH·KW.
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Elements of one input image.
    pub fn in_img(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Elements of one output image.
    pub fn out_img(&self) -> usize {
        self.cout * self.ho * self.wo
    }

    /// Output positions per channel.
    pub fn p_out(&self) -> usize {
        self.ho * self.wo
    }

    /// Input shape (N, Cin, H, W).
    pub fn x_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.cin, self.h, self.w)
    }

    /// Weight shape (Cout, Cin, KH, KW).
    pub fn w_dims(&self) -> (usize, usize, usize, usize) {
        (self.cout, self.cin, self.kh, self.kw)
    }

    /// Output shape (N, Cout, Ho, Wo).
    pub fn y_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.cout, self.ho, self.wo)
    }

    /// Multiply-adds of one forward pass.
    pub fn macs(&self) -> u64 {
        (self.n * self.cout * self.p_out()) as u64 * self.k() as u64
    }
}
