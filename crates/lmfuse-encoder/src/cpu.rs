//! Run-time choice of a micro-kernel family's member: the fastest one the CPU can run, or the
//! one an environment variable forces (so tests can cover every kernel a machine runs); and
//! the split of a product's rows over the threads that every family uses.

use crate::error::EncoderError;

/// A family of interchangeable micro-kernels, one per instruction set ([`Int8Kernel`],
/// [`Bf16Kernel`]): each says what it is called and whether the CPU runs it; choosing one is
/// common to all.
///
/// [`Int8Kernel`]: crate::Int8Kernel
/// [`Bf16Kernel`]: crate::Bf16Kernel
pub trait Kernel: Copy + PartialEq + Sized + 'static {
    /// Every member, slowest first; the first is the portable reference.
    const ALL: &'static [Self];
    /// The environment variable that forces a member by name.
    const ENV: &'static str;
    /// The name used by [`Kernel::ENV`] and in reports.
    fn name(self) -> &'static str;
    /// Whether this CPU can run the member.
    fn supported(self) -> bool;

    /// The members this CPU can run, slowest first.
    fn available() -> Vec<Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(|k| k.supported())
            .collect()
    }

    /// The member to use: the one [`Kernel::ENV`] names, or else the fastest available.
    fn select() -> Result<Self, EncoderError> {
        Self::choose(std::env::var(Self::ENV).ok().as_deref())
    }

    /// The member named by `forced` (the value of [`Kernel::ENV`]) when it is set and not
    /// empty, or else the fastest available; an unknown name, or a member this CPU cannot
    /// run, is an error that says which ones it can.
    fn choose(forced: Option<&str>) -> Result<Self, EncoderError> {
        let available = Self::available();
        let Some(name) = forced.filter(|n| !n.is_empty()) else {
            return Ok(*available
                .last()
                .expect("the portable kernel is always available"));
        };
        let names = |kernels: &[Self]| {
            kernels
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let env = Self::ENV;
        let runs = names(&available);
        match Self::ALL.iter().copied().find(|k| k.name() == name) {
            Some(kernel) if kernel.supported() => Ok(kernel),
            Some(_) => Err(EncoderError::Kernel {
                message: format!("{env}={name}: this CPU lacks its instructions (it runs: {runs})"),
            }),
            None => Err(EncoderError::Kernel {
                message: format!(
                    "{env}={name:?} names no kernel (expected one of {}; this CPU runs: {runs})",
                    names(Self::ALL)
                ),
            }),
        }
    }
}

/// `out += x · W` through `product` over blocks of `x`'s `rows` rows (`[rows, inputs]`, into
/// `out`'s `[rows, outputs]`) on `kernel`, split over the rayon pool when `parallel`: a few
/// blocks per thread for balance, each a multiple of `rows_per_kernel` and big enough to reuse
/// a weight panel many times. Panics on sizes that do not match, or a kernel this CPU lacks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_row_blocks<K: Kernel + Sync>(
    out: &mut [f32],
    x: &[f32],
    rows: usize,
    (inputs, outputs): (usize, usize),
    kernel: K,
    rows_per_kernel: usize,
    parallel: bool,
    product: impl Fn(&mut [f32], &[f32], K) + Sync,
) {
    use rayon::prelude::*;
    assert_eq!(x.len(), rows * inputs, "input size");
    assert_eq!(out.len(), rows * outputs, "output size");
    assert!(
        kernel.supported(),
        "{} is not supported here",
        kernel.name()
    );
    if rows == 0 || outputs == 0 {
        return;
    }
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let block = rows
        .div_ceil(threads * 4)
        .next_multiple_of(rows_per_kernel)
        .max(8 * rows_per_kernel);
    let pieces = out
        .chunks_mut(block * outputs)
        .zip(x.chunks(block * inputs));
    if threads > 1 && rows > block {
        pieces
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(o, x)| product(o, x, kernel));
    } else {
        pieces.for_each(|(o, x)| product(o, x, kernel));
    }
}
