//! The training loss in two kernel launches: mean cross-entropy (with label smoothing) and the
//! count of correct top-1 predictions in one forward kernel, the logits' gradient in one
//! backward kernel. Candle's ops take about 15 launches forward and as many backward for the
//! same, each with an allocation. Compiled with NVRTC on first use, like the multi-tensor SGD.

use std::sync::{Arc, Mutex};

use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use candle_core::{CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::*;
use crate::KernelError;

const XENT: &str = "cross-entropy";

/// Threads of the forward kernel's single block; the block strides over the rows.
const FWD_THREADS: u32 = 256;
/// Threads per block of the backward kernel, one row each.
const BWD_THREADS: u32 = 128;

/// Per row i of the (n, k) logits x with label t = `y[i]`: lse = log Σⱼ exp(xᵢⱼ), and the loss
/// (1 − s)·(lse − xᵢₜ) + s·(lse − mean(xᵢ)), the trainer's `cross_entropy`. The forward kernel
/// writes the rows' mean loss and their count of correct predictions (argmax, the first of
/// equal maxima, equal to t); the backward kernel writes g/n · (softmax(xᵢ)ⱼ − (1 − s)·[j = t]
/// − s/k). A label outside 0..k makes its row's loss and gradient NaN, which the trainer
/// reports as a non-finite loss, instead of a read out of bounds.
const SRC: &str = r#"
extern "C" __global__ void layerzero_xent_fwd(const float* x, const unsigned int* y, float* loss,
                                              float* correct, unsigned int n, unsigned int k,
                                              float s) {
    __shared__ float l_part[256];
    __shared__ float c_part[256];
    float l = 0.f, c = 0.f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float* row = x + (size_t)i * k;
        float m = row[0];
        unsigned int arg = 0;
        for (unsigned int j = 1; j < k; ++j) {
            if (row[j] > m) { m = row[j]; arg = j; }
        }
        float e = 0.f, sum = 0.f;
        for (unsigned int j = 0; j < k; ++j) { e += expf(row[j] - m); sum += row[j]; }
        const float lse = m + logf(e);
        const unsigned int t = y[i];
        const float nll = t < k ? lse - row[t] : __int_as_float(0x7fc00000);
        l += s > 0.f ? (1.f - s) * nll + s * (lse - sum / (float)k) : nll;
        c += (t == arg) ? 1.f : 0.f;
    }
    l_part[threadIdx.x] = l;
    c_part[threadIdx.x] = c;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            l_part[threadIdx.x] += l_part[threadIdx.x + half];
            c_part[threadIdx.x] += c_part[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        loss[0] = l_part[0] / (float)n;
        correct[0] = c_part[0];
    }
}

extern "C" __global__ void layerzero_xent_bwd(const float* x, const unsigned int* y,
                                              const float* g, float* dx, unsigned int n,
                                              unsigned int k, float s) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float* row = x + (size_t)i * k;
    float* out = dx + (size_t)i * k;
    float m = row[0];
    for (unsigned int j = 1; j < k; ++j) m = fmaxf(m, row[j]);
    float e = 0.f;
    for (unsigned int j = 0; j < k; ++j) e += expf(row[j] - m);
    const unsigned int t = y[i];
    const float scale = g[0] / (float)n;
    const float bad = t < k ? 0.f : __int_as_float(0x7fc00000);
    for (unsigned int j = 0; j < k; ++j) {
        const float target = (j == t ? 1.f - s : 0.f) + s / (float)k;
        out[j] = scale * (expf(row[j] - m) / e - target) + bad;
    }
}
"#;

fn funcs(dev: &CudaDevice) -> Result<[CudaFunction; 2]> {
    nvrtc_functions(dev, SRC, ["layerzero_xent_fwd", "layerzero_xent_bwd"])
}

/// (n, k) from contiguous (n, k) f32 logits and contiguous (n,) u32 labels, both below 2³¹.
fn dims(xl: &Layout, yl: &Layout) -> Result<(u32, u32)> {
    let (n, k) = match *xl.dims() {
        [n, k] if n > 0 && k > 0 => (n, k),
        ref d => {
            return Err(KernelError::shape(XENT, format!("logits {d:?}, expected (n, k)")).into())
        }
    };
    if yl.dims() != [n] {
        return Err(KernelError::shape(
            XENT,
            format!(
                "labels {:?}, expected ({n},) for logits {:?}",
                yl.dims(),
                xl.dims()
            ),
        )
        .into());
    }
    if !xl.is_contiguous() || !yl.is_contiguous() {
        return Err(KernelError::unsupported(XENT, "non-contiguous layout").into());
    }
    let small = |v: usize| u32::try_from(v).ok().filter(|v| *v < 1 << 31);
    match (small(n), small(n * k)) {
        (Some(n32), Some(_)) => Ok((n32, k as u32)),
        _ => Err(KernelError::shape(XENT, format!("{n}×{k} logits, over 2^31 elements")).into()),
    }
}

/// Launches one of the two kernels: both take four device addresses, then n, k and the
/// smoothing.
///
/// # Safety
/// The addresses must be live allocations of the sizes the kernel reads and writes for these
/// n and k, on `stream`.
#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    stream: &CudaStream,
    func: &CudaFunction,
    blocks: u32,
    threads: u32,
    ptrs: [u64; 4],
    n: u32,
    k: u32,
    smoothing: f32,
) -> Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = stream.launch_builder(func);
    for p in &ptrs {
        builder.arg(p);
    }
    builder.arg(&n).arg(&k).arg(&smoothing);
    // SAFETY: the caller's contract.
    unsafe { builder.launch(cfg) }.map_err(candle_core::Error::wrap)?;
    Ok(())
}

/// Mean loss as the op's output; the correct count kept aside for the caller.
#[derive(Debug)]
struct CrossEntropy {
    smoothing: f32,
    correct: Arc<Mutex<Option<CudaSlice<f32>>>>,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        XENT
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        Err(KernelError::unsupported(XENT, "CPU tensors take candle's ops").into())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ys: &CudaStorage,
        yl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, k) = dims(xl, yl)?;
        let dev = &xs.device;
        let [fwd, _] = funcs(dev)?;
        let stream = dev.cuda_stream();
        // SAFETY: thread 0 writes both elements after the block's reduction.
        let mut loss = unsafe { dev.alloc::<f32>(1)? };
        let mut correct = unsafe { dev.alloc::<f32>(1)? };
        {
            let (xp, _g1) = ptr(XENT, xs, xl, &stream)?;
            let (yp, _g2) = typed_ptr::<u32>(XENT, ys, yl, &stream)?;
            let (lp, _g3) = ptr_mut(&mut loss, &stream);
            let (cp, _g4) = ptr_mut(&mut correct, &stream);
            let ptrs = [xp as u64, yp as u64, lp as u64, cp as u64];
            // SAFETY: x holds n·k f32 and y n u32 (checked by `dims`), loss and correct one f32
            // each; the kernel reads y[i] as an index only below k.
            unsafe { launch(&stream, &fwd, 1, FWD_THREADS, ptrs, n, k, self.smoothing)? };
        }
        count();
        *self
            .correct
            .lock()
            .map_err(|_| KernelError::unsupported(XENT, "poisoned lock"))? = Some(correct);
        Ok((
            CudaStorage::wrap_cuda_slice(loss, dev.clone()),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = with_cuda(XENT, x, |xs, xl| {
            with_cuda(XENT, y, |ys, yl| {
                with_cuda(XENT, &grad, |gs, gl| {
                    let (n, k) = dims(xl, yl)?;
                    let dev = &xs.device;
                    let [_, bwd] = funcs(dev)?;
                    let stream = dev.cuda_stream();
                    // SAFETY: one thread per row writes each of the row's k elements.
                    let mut dx = unsafe { dev.alloc::<f32>(n as usize * k as usize)? };
                    {
                        let (xp, _g1) = ptr(XENT, xs, xl, &stream)?;
                        let (yp, _g2) = typed_ptr::<u32>(XENT, ys, yl, &stream)?;
                        let (gp, _g3) = ptr(XENT, gs, gl, &stream)?;
                        let (dp, _g4) = ptr_mut(&mut dx, &stream);
                        let ptrs = [xp as u64, yp as u64, gp as u64, dp as u64];
                        let blocks = n.div_ceil(BWD_THREADS);
                        let s = self.smoothing;
                        // SAFETY: as in the forward pass; g is the loss's one-element gradient
                        // and dx has n·k elements.
                        unsafe { launch(&stream, &bwd, blocks, BWD_THREADS, ptrs, n, k, s)? };
                    }
                    count();
                    Ok(tensor(dx, dev, (n as usize, k as usize)))
                })
            })
        })?;
        Ok((Some(dx), None))
    }
}

/// See [`crate::cross_entropy_train`].
pub(crate) fn cross_entropy_train(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> Result<crate::CrossEntropyOutput> {
    if labels.dtype() != DType::U32 {
        return Err(KernelError::unsupported(XENT, "labels must be u32").into());
    }
    let logits = logits.contiguous()?;
    let labels = labels.contiguous()?;
    let correct = Arc::new(Mutex::new(None));
    let op = CrossEntropy {
        smoothing: smoothing as f32,
        correct: correct.clone(),
    };
    let loss = logits.apply_op2(&labels, op)?;
    let candle_core::Device::Cuda(dev) = logits.device() else {
        return Err(KernelError::unsupported(XENT, "tensor is not on a CUDA device").into());
    };
    let correct = correct
        .lock()
        .map_err(|_| KernelError::unsupported(XENT, "poisoned lock"))?
        .take()
        .ok_or_else(|| KernelError::unsupported(XENT, "forward did not run"))?;
    Ok(crate::CrossEntropyOutput {
        loss,
        correct: tensor(correct, dev, ()),
    })
}
