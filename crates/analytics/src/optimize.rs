//! Unconstrained minimisation of smooth functions with few parameters: BFGS with an
//! Armijo backtracking line search. The models fit their parameters in log space, so
//! every point is valid; a step into a region where the function is not finite is
//! simply shortened.

/// Where a minimisation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// The point found.
    pub x: Vec<f64>,
    /// The function's value there.
    pub value: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// Whether the gradient fell below the tolerance (else the iteration limit or a line
    /// search that could not improve ended it).
    pub converged: bool,
    /// The approximation of the inverse Hessian at the end (row-major), to warm-start a
    /// related minimisation.
    pub inverse_hessian: Vec<f64>,
}

/// Minimises `f` from `x0`. `f(x, grad)` returns the value at `x` and writes the gradient
/// into `grad`. Stops when every component of the gradient is below `gtol` in absolute
/// value; or when three steps in a row change the value by less than its rounding error
/// while the gradient is below `1000 · gtol` (the floating-point floor of a sum over many
/// terms); or after `max_iter` iterations.
pub fn bfgs(
    f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    gtol: f64,
    max_iter: usize,
) -> Minimum {
    bfgs_from(f, x0, None, gtol, max_iter)
}

/// [`bfgs`] starting from an approximation `h0` of the inverse Hessian (row-major), e.g.
/// that of a fit on a sample of the same data; the identity when `None` or of the wrong
/// size.
pub fn bfgs_from(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    h0: Option<&[f64]>,
    gtol: f64,
    max_iter: usize,
) -> Minimum {
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut h = match h0 {
        Some(h) if h.len() == n * n && h.iter().all(|v| v.is_finite()) => h.to_vec(),
        _ => identity(n),
    };
    let (mut xn, mut gn, mut d) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut stalled = 0;
    for it in 0..max_iter {
        if g.iter().all(|v| v.abs() < gtol) {
            return Minimum {
                x,
                value: fx,
                iterations: it,
                converged: true,
                inverse_hessian: h,
            };
        }
        for i in 0..n {
            d[i] = -(0..n).map(|j| h[i * n + j] * g[j]).sum::<f64>();
        }
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction: start over from steepest descent.
            h = identity(n);
            for i in 0..n {
                d[i] = -g[i];
            }
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        let mut step = 1.0;
        let mut accepted = false;
        let mut fnew = f64::NAN;
        for _ in 0..80 {
            for i in 0..n {
                xn[i] = x[i] + step * d[i];
            }
            fnew = f(&xn, &mut gn);
            // Armijo's sufficient decrease; or, where the value no longer changes beyond
            // its rounding error (next to the optimum), a smaller gradient.
            let flat = (fnew - fx).abs() <= 1e-14 * fx.abs().max(1.0) && norm(&gn) < norm(&g);
            if fnew.is_finite() && (fnew <= fx + 1e-4 * step * slope || flat) {
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return Minimum {
                x,
                value: fx,
                iterations: it,
                converged: g.iter().all(|v| v.abs() < gtol.sqrt()),
                inverse_hessian: h,
            };
        }
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| gn[i] - g[i]).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        if sy > 1e-300 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i * n + j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] +=
                        (1.0 + rho * yhy) * rho * s[i] * s[j] - rho * (hy[i] * s[j] + s[i] * hy[j]);
                }
            }
        }
        let flat = fx - fnew <= 1e-15 * fx.abs().max(1.0);
        stalled = if flat { stalled + 1 } else { 0 };
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        fx = fnew;
        if stalled >= 3 && g.iter().all(|v| v.abs() < 1e3 * gtol) {
            return Minimum {
                x,
                value: fx,
                iterations: it + 1,
                converged: true,
                inverse_hessian: h,
            };
        }
    }
    let converged = g.iter().all(|v| v.abs() < gtol);
    Minimum {
        x,
        value: fx,
        iterations: max_iter,
        converged,
        inverse_hessian: h,
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_the_rosenbrock_function() {
        let m = bfgs(
            |x, g| {
                let (a, b) = (x[0], x[1]);
                g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
                g[1] = 200.0 * (b - a * a);
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
            },
            &[-1.2, 1.0],
            1e-10,
            1000,
        );
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-8 && (m.x[1] - 1.0).abs() < 1e-8,
            "{m:?}"
        );
    }

    #[test]
    fn shortens_steps_into_regions_where_the_function_is_not_finite() {
        // ln-barrier: f(x) = x − ln x has its minimum at 1 and is NaN below 0.
        let m = bfgs(
            |x, g| {
                g[0] = 1.0 - 1.0 / x[0];
                x[0] - x[0].ln()
            },
            &[20.0],
            1e-12,
            200,
        );
        assert!(m.converged && (m.x[0] - 1.0).abs() < 1e-9, "{m:?}");
    }
}
