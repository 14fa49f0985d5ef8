/* The compiled CPU selective scan: forward and backward of the ``cpu`` backend.
 *
 * Plain C99 with GCC/Clang vector extensions: one vector holds VL channels (16 floats
 * where AVX-512 is enabled, else 8), so the same source becomes AVX-512, AVX2, NEON or
 * scalar code depending on the machine it is built on (-march=native). No intrinsics.
 *
 * Layouts (all float32, contiguous; see cpu_backend.py, which prepares them):
 *   u      (batch, L, dim) shared by the K directions, or (batch, L, K, dim)
 *   delta  (batch, L, K, dim);  B, C (batch, L, K, N)
 *   At     (K, N, dim): A transposed so that one state row is contiguous over channels
 *   D, bias (K, dim);  weights (K);  orders (K, L) int64
 *   z      (batch, L, dim) (MERGE, PER_DIRECTION) or (batch, L, K, dim) (HEADS)
 *   out    MERGE (batch, L, dim); PER_DIRECTION and HEADS (batch, L, K, dim)
 *   ckpts  (batch, K, nchunks, N, dim): the state after the last step of every chunk
 * Direction k reads step t at row src(t) = orders[k, t] when `gather`, else t, and writes
 * its output at row dst(t) = t in HEADS mode, else orders[k, t] (image order).
 *
 * Work is split into units (batch element, group of channel blocks); units never write
 * the same element, and reductions over channels or batch go to per-unit partial buffers
 * summed afterwards in a fixed order, so results do not depend on the thread schedule.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#define ISA "avx512"
#elif defined(__AVX2__)
#define VL 8
#define ISA "avx2"
#elif defined(__AVX__)
#define VL 8
#define ISA "avx"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define VL 8
#define ISA "neon"
#elif defined(__SSE2__)
#define VL 8
#define ISA "sse2"
#else
#define VL 8
#define ISA "generic"
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

enum { MERGE = 0, PER_DIRECTION = 1, HEADS = 2 };

typedef struct {
    int64_t batch, L, K, dim, N, chunk, groups, threads;
    int32_t mode, gather, u_shared, softplus;
    const float *u, *delta, *At, *B, *C, *D, *weights, *bias, *z;
    const int64_t *orders;
    float *out, *ysum, *ckpts;
    /* backward only */
    const float *gg;        /* gradient at the gated output times silu(z): out's layout */
    const float *g_last;    /* (batch, K, N, dim) or NULL */
    float *gu, *gdelta;     /* u's and delta's layouts (NULL: not needed) */
    float *gB, *gC;         /* (groups, batch, L, K, N) partial sums over channel groups */
    float *gA;              /* (batch, K, N, dim) partial over batch */
    float *gD, *gbias;      /* (batch, K, dim) partial over batch (NULL: not needed) */
    float *gw;              /* (batch, groups, K) partial (NULL: not needed) */
} ScanArgs;

const char *scan_isa(void) { return ISA; }
int scan_lanes(void) { return VL; }
int scan_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---- vector helpers ------------------------------------------------------------------ */

static inline vf splat(float x) { return (vf){0} + x; }

static inline vf vload(const float *p, int n) {
    vf v;
    if (n == VL) {
        memcpy(&v, p, sizeof v);
    } else {
        v = (vf){0};
        memcpy(&v, p, (size_t)n * sizeof(float));
    }
    return v;
}

static inline void vstore(float *p, vf v, int n) {
    if (n == VL)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, (size_t)n * sizeof(float));
}

static inline vf vsel(vi mask, vf a, vf b) {  /* mask ? a : b, lane by lane */
    vi r = (mask & (vi)a) | (~mask & (vi)b);
    return (vf)r;
}

static inline float hsum(vf v) {
    float s = 0.f;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

#if VL == 16 && defined(__AVX512F__)
#include <immintrin.h>
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
static inline vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
#elif VL == 8 && defined(__AVX__)
#include <immintrin.h>
static inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
static inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
#else
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
#endif
/* vmax(c, x) and vmin(c, x) return x where x is NaN (x86 returns the second operand, the
 * generic form the unselected one), so NaN flows through the clamps below. */

/* 2^x: x = n + f with n an integer and |f| <= 1/2, a degree-5 polynomial for 2^f (fitted to
 * relative error 1.0e-7, 1.9e-7 after fp32 rounding), and n added to its exponent bits.
 * Clamped to [-126, 128]: 2^-126 (the smallest normal) stands for anything smaller, and
 * 2^128 is inf. Adding 1.5 * 2^23 rounds x to an integer n held in the low mantissa bits
 * (two's complement below 2^22); shifted left by 23 they are n << 23, every higher bit
 * falling off. With x >= -126 the result's exponent field stays >= 1, so the integer add
 * of n to p's exponent is exact. */
static inline vf vexp2(vf x) {
    x = vmax(splat(-126.f), x);
    x = vmin(splat(128.f), x);
    const vf magic = splat(12582912.f); /* 1.5 * 2^23 */
    vf t = x + magic;
    vf f = x - (t - magic);
    /* Estrin's scheme: a shorter dependency chain than Horner's, so more exps overlap */
    vf f2 = f * f;
    vf p01 = splat(6.93146856e-1f) * f + splat(1.f);
    vf p23 = splat(5.55089295e-2f) * f + splat(2.40222380e-1f);
    vf p45 = splat(1.32186725e-3f) * f + splat(9.67169794e-3f);
    vf p = (p45 * f2 + p23) * f2 + p01;
    return (vf)((vi)p + ((vi)t << 23));
}

#define LOG2E 1.44269504088896341f

static inline vf vexp(vf x) { return vexp2(x * LOG2E); }

/* log1p(y) for y in [0, 1]: y P(y), P a degree-8 polynomial fitted to absolute error 6e-9
 * (1.3e-7 after fp32 rounding; relative 8e-7 as y -> 0, where y itself is exact). No
 * division and no rounding of 1 + y. */
static inline vf vlog1p01(vf y) {
    vf y2 = y * y, y4 = y2 * y2;
    vf q0 = splat(-0.499967794f) * y + splat(0.999999226f);
    vf q1 = splat(-0.246549148f) * y + splat(0.332862844f);
    vf q2 = splat(-0.126020914f) * y + splat(0.185178700f);
    vf q3 = splat(-0.0233831791f) * y + splat(0.0672022103f);
    vf r0 = q1 * y2 + q0;
    vf r1 = q3 * y2 + q2;
    vf r2 = splat(0.00382524029f) * y4 + r1;
    return (r2 * y4 + r0) * y;
}

/* torch's softplus (beta 1, threshold 20): max(x, 0) + log1p(exp(-|x|)); above 20, x itself. */
static inline vf vsoftplus(vf x) {
    vi neg = x < splat(0.f);
    vf ax = vsel(neg, -x, x);
    vf pos = vsel(neg, splat(0.f), x);
    vf sp = pos + vlog1p01(vexp(-ax));
    return vsel(x > splat(20.f), x, sp);
}

static inline vf vsigmoid(vf x) { return splat(1.f) / (splat(1.f) + vexp(-x)); }

/* ---- shared pieces ------------------------------------------------------------------- */

typedef struct {  /* one (direction, channel block): where it reads and what it keeps */
    int64_t k, d0;
    int nl;            /* live lanes: VL, or fewer in the last block */
} Block;

static inline int64_t src_row(const ScanArgs *a, int64_t k, int64_t t) {
    return a->gather ? a->orders[k * a->L + t] : t;
}

static inline int64_t dst_row(const ScanArgs *a, int64_t k, int64_t t) {
    return a->mode == HEADS ? t : a->orders[k * a->L + t];
}

/* Discretisation inputs of one step: dt (after bias and softplus), the pre-softplus
 * sigmoid (for the backward) and u. */
static inline void step_inputs(const ScanArgs *a, int64_t b, const Block *blk, int64_t src,
                               vf *dt, vf *sig, vf *u) {
    const int64_t K = a->K, dim = a->dim, L = a->L;
    vf x = vload(a->delta + ((b * L + src) * K + blk->k) * dim + blk->d0, blk->nl);
    if (a->bias) x += vload(a->bias + blk->k * dim + blk->d0, blk->nl);
    if (a->softplus) {
        if (sig) *sig = vsigmoid(x);
        x = vsoftplus(x);
    }
    *dt = x;
    if (a->u_shared)
        *u = vload(a->u + (b * L + src) * dim + blk->d0, blk->nl);
    else
        *u = vload(a->u + ((b * L + src) * K + blk->k) * dim + blk->d0, blk->nl);
}

static inline int64_t nchunks(const ScanArgs *a) { return (a->L + a->chunk - 1) / a->chunk; }

static inline float *ckpt_at(const ScanArgs *a, int64_t b, int64_t k, int64_t c) {
    return a->ckpts + ((b * a->K + k) * nchunks(a) + c) * a->N * a->dim;
}

/* Channel blocks of group g: [first, last) in units of VL channels. */
static inline void group_blocks(const ScanArgs *a, int64_t g, int64_t *first, int64_t *last) {
    int64_t nblk = (a->dim + VL - 1) / VL;
    *first = g * nblk / a->groups;
    *last = (g + 1) * nblk / a->groups;
}

static inline Block make_block(const ScanArgs *a, int64_t k, int64_t blk) {
    Block r;
    r.k = k;
    r.d0 = blk * VL;
    r.nl = (int)(a->dim - r.d0 < VL ? a->dim - r.d0 : VL);
    return r;
}

/* ---- forward --------------------------------------------------------------------------- */

/* One chunk [s, e) of one block: states h (N vectors) carried in and out; ys[t] = C_t . h_t
 * + D u_t written to the output. n outer, t inner: one state lives in a register while the
 * decays of all steps stream past. */
static inline __attribute__((always_inline)) void fwd_chunk(const ScanArgs *a, int64_t b, const Block *blk,
                                                            int64_t s, int64_t e, vf *h, vf *dts, vf *dtus,
                                                            vf *us, vf *ys, vf *dt2s, int64_t *src,
                                                            const int N) {
    /* src[t]: offset of step t's row of B and C */
    const int64_t K = a->K, L = a->L, dim = a->dim;
    const int64_t T = e - s;
    for (int64_t t = 0; t < T; t++) {
        const int64_t r = src_row(a, blk->k, s + t);
        step_inputs(a, b, blk, r, &dts[t], NULL, &us[t]);
        src[t] = ((b * L + r) * K + blk->k) * N; /* the step's B and C row */
        dtus[t] = dts[t] * us[t];
        dt2s[t] = dts[t] * LOG2E; /* exp(dt A) = 2^(dt log2(e) A) */
        ys[t] = (vf){0};
    }
    const float *Ak = a->At + blk->k * N * dim + blk->d0;
    for (int n = 0; n < N; n++) {
        vf An = vload(Ak + (int64_t)n * dim, blk->nl);
        vf hn = h[n];
        for (int64_t t = 0; t < T; t++) {
            hn = vexp2(dt2s[t] * An) * hn + dtus[t] * a->B[src[t] + n];
            ys[t] += hn * a->C[src[t] + n];
        }
        h[n] = hn;
    }
}

static inline __attribute__((always_inline)) void fwd_unit(const ScanArgs *a, int64_t unit, vf *scratch,
                                                           int64_t *src, const int N) {
    const int64_t L = a->L, K = a->K, dim = a->dim, T = a->chunk;
    const int64_t b = unit / a->groups, g = unit % a->groups;
    int64_t first, last;
    group_blocks(a, g, &first, &last);
    vf *dts = scratch, *dtus = dts + T, *us = dtus + T, *ys = us + T, *dt2s = ys + T, *hst = dt2s + T;
    /* chunk-major, blocks inside: the blocks of one chunk read the same few rows (cache lines)
     * one after another; each block's states wait in hst between chunks */
    for (int64_t k = 0; k < K; k++) {
        const float wk = a->weights ? a->weights[k] : 1.f;
        for (int64_t j = 0; j < (last - first) * N; j++) hst[j] = (vf){0};
        for (int64_t c = 0, s = 0; s < L; c++, s += T) {
            const int64_t e = s + T < L ? s + T : L;
            for (int64_t bi = first; bi < last; bi++) {
                Block blk = make_block(a, k, bi);
                vf *h = hst + (bi - first) * N;
                vf Dk = a->D ? vload(a->D + k * dim + blk.d0, blk.nl) : (vf){0};
                fwd_chunk(a, b, &blk, s, e, h, dts, dtus, us, ys, dt2s, src, N);
                float *ck = ckpt_at(a, b, k, c) + blk.d0;
                for (int n = 0; n < N; n++) vstore(ck + (int64_t)n * dim, h[n], blk.nl);
                for (int64_t t = 0; t < e - s; t++) {
                    vf y = ys[t] + Dk * us[t];
                    int64_t row = dst_row(a, k, s + t);
                    if (a->mode == MERGE) {
                        float *o = a->out + (b * L + row) * dim + blk.d0;
                        vf acc = k == 0 ? (vf){0} : vload(o, blk.nl);
                        vstore(o, acc + y * wk, blk.nl);
                    } else {
                        vstore(a->out + ((b * L + row) * K + k) * dim + blk.d0, y, blk.nl);
                    }
                }
            }
        }
    }
    if (!a->z) return;
    /* the gate: out = ysum * silu(z), ysum kept for the backward */
    const int64_t dirs = a->mode == MERGE ? 1 : K;
    for (int64_t bi = first; bi < last; bi++) {
        Block blk = make_block(a, 0, bi);
        for (int64_t l = 0; l < L; l++) {
            vf gate = (vf){0};
            if (a->mode != HEADS) {
                vf z = vload(a->z + (b * L + l) * dim + blk.d0, blk.nl);
                gate = z * vsigmoid(z);
            }
            for (int64_t k = 0; k < dirs; k++) {
                int64_t off = (a->mode == MERGE ? (b * L + l) * dim : ((b * L + l) * K + k) * dim) + blk.d0;
                if (a->mode == HEADS) {
                    vf z = vload(a->z + off, blk.nl);
                    gate = z * vsigmoid(z);
                }
                vf y = vload(a->out + off, blk.nl);
                vstore(a->ysum + off, y, blk.nl);
                vstore(a->out + off, y * gate, blk.nl);
            }
        }
    }
}

static void fwd_unit_any(const ScanArgs *a, int64_t unit, vf *scratch, int64_t *src) {
    fwd_unit(a, unit, scratch, src, (int)a->N);
}

static void fwd_unit_16(const ScanArgs *a, int64_t unit, vf *scratch, int64_t *src) {
    fwd_unit(a, unit, scratch, src, 16);
}

static int64_t threads_for(const ScanArgs *a, int64_t units) {
    int64_t t = a->threads < 1 ? 1 : a->threads;
    return t < units ? t : units;
}

int scan_forward(const ScanArgs *a) {
    const int64_t units = a->batch * a->groups;
    const int64_t nblk = (a->dim + VL - 1) / VL, blocks = (nblk + a->groups - 1) / a->groups;
    const size_t per = (size_t)(blocks * a->N + 5 * a->chunk);
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a, units)) reduction(| : failed)
    {
        vf *scratch = aligned_alloc(64, ((per * sizeof(vf) + 63) / 64) * 64);
        int64_t *src = malloc((size_t)a->chunk * sizeof(int64_t));
        const int ok = scratch && src; /* every thread must reach the worksharing loop */
        failed = !ok;
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < units; unit++) {
            if (!ok)
                failed = 1;
            else if (a->N == 16)
                fwd_unit_16(a, unit, scratch, src);
            else
                fwd_unit_any(a, unit, scratch, src);
        }
        free(scratch);
        free(src);
    }
    return failed ? -1 : 0;
}

/* ---- backward -------------------------------------------------------------------------- */

typedef struct {  /* a unit's working memory */
    vf *hs;        /* (T + 1) x N: h before the chunk, then after each step */
    vf *dA;        /* T x N decays */
    vf *gBv, *gCv; /* T x N lane partials of dB, dC, summed over the group's blocks */
    vf *carry;     /* blocks x N: gradient reaching the chunk's last state from the next chunk */
    vf *gAacc;     /* blocks x N */
    vf *gDacc, *gbacc; /* blocks */
    vf *dts, *dt2s, *sigs, *us, *ys, *gys, *ghB, *gdtA; /* T each */
    int64_t *src, *dst, *row; /* per step: rows read and written, offset of its B and C row */
} Work;

static size_t work_vectors(const ScanArgs *a, int64_t blocks) {
    const size_t T = (size_t)a->chunk, N = (size_t)a->N;
    return (T + 1) * N + 3 * T * N + 2 * (size_t)blocks * N + 2 * (size_t)blocks + 8 * T;
}

static void work_split(const ScanArgs *a, int64_t blocks, vf *mem, Work *w) {
    const int64_t T = a->chunk, N = a->N;
    w->hs = mem;
    w->dA = w->hs + (T + 1) * N;
    w->gBv = w->dA + T * N;
    w->gCv = w->gBv + T * N;
    w->carry = w->gCv + T * N;
    w->gAacc = w->carry + blocks * N;
    w->gDacc = w->gAacc + blocks * N;
    w->gbacc = w->gDacc + blocks;
    w->dts = w->gbacc + blocks;
    w->dt2s = w->dts + T;
    w->sigs = w->dt2s + T;
    w->us = w->sigs + T;
    w->ys = w->us + T;
    w->gys = w->ys + T;
    w->ghB = w->gys + T;
    w->gdtA = w->ghB + T;
}

/* One chunk of one block, backwards: recompute the states from the checkpoint, then walk
 * the adjoint recurrence gh_t = gy_t C_t + dA_{t+1} gh_{t+1} in reverse. */
static inline __attribute__((always_inline)) void bwd_chunk(const ScanArgs *a, int64_t b, const Block *blk,
                                                            int64_t bi, int64_t c, int64_t s, int64_t e,
                                                            Work *w, int want_w, vf *gw_acc, int first_k,
                                                            const int N) {
    const int64_t K = a->K, L = a->L, dim = a->dim;
    const int64_t T = e - s, k = blk->k;
    const float wk = a->weights ? a->weights[k] : 1.f;
    vf *carry = w->carry + bi * N, *gA = w->gAacc + bi * N;
    /* states before the chunk */
    if (c == 0) {
        for (int n = 0; n < N; n++) w->hs[n] = (vf){0};
    } else {
        const float *ck = ckpt_at(a, b, k, c - 1) + blk->d0;
        for (int n = 0; n < N; n++) w->hs[n] = vload(ck + (int64_t)n * dim, blk->nl);
    }
    for (int64_t t = 0; t < T; t++) {
        w->src[t] = src_row(a, k, s + t);
        w->dst[t] = dst_row(a, k, s + t);
        w->row[t] = ((b * L + w->src[t]) * K + k) * N;
        step_inputs(a, b, blk, w->src[t], &w->dts[t], &w->sigs[t], &w->us[t]);
        w->dt2s[t] = w->dts[t] * LOG2E;
        const float *g;
        if (a->mode == MERGE)
            g = a->gg + (b * L + w->dst[t]) * dim + blk->d0;
        else
            g = a->gg + ((b * L + w->dst[t]) * K + k) * dim + blk->d0;
        vf gu = vload(g, blk->nl);
        w->gys[t] = gu * wk;
        w->ys[t] = gu; /* the unweighted output gradient, for the weights' gradient below */
        w->ghB[t] = (vf){0};
        w->gdtA[t] = (vf){0};
    }
    const float *Ak = a->At + k * N * dim + blk->d0;
    /* recompute: hs[t + 1] = h_t, dA[t] = exp(dt_t A) */
    for (int n = 0; n < N; n++) {
        vf An = vload(Ak + (int64_t)n * dim, blk->nl);
        vf hn = w->hs[n];
        for (int64_t t = 0; t < T; t++) {
            vf da = vexp2(w->dt2s[t] * An);
            hn = da * hn + (w->dts[t] * w->us[t]) * a->B[w->row[t] + n];
            w->dA[t * N + n] = da;
            w->hs[(t + 1) * N + n] = hn;
        }
    }
    if (want_w) { /* dL/dw_k = sum gg * y_k, y_k = C . h + D u */
        vf Dk = a->D ? vload(a->D + k * dim + blk->d0, blk->nl) : (vf){0};
        for (int64_t t = 0; t < T; t++) {
            vf y = Dk * w->us[t];
            for (int n = 0; n < N; n++) y += w->hs[(t + 1) * N + n] * a->C[w->row[t] + n];
            *gw_acc += w->ys[t] * y;
        }
    }
    /* adjoint, n outer and t backwards */
    for (int n = 0; n < N; n++) {
        vf An = vload(Ak + (int64_t)n * dim, blk->nl);
        vf cr = carry[n], ga = gA[n];
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t row = w->row[t];
            vf g = w->gys[t] * a->C[row + n] + cr;
            w->gCv[t * N + n] += w->gys[t] * w->hs[(t + 1) * N + n];
            vf da = w->dA[t * N + n];
            vf X = g * da * w->hs[t * N + n];
            w->gdtA[t] += X * An;
            ga += X * w->dts[t];
            w->ghB[t] += g * a->B[row + n];
            w->gBv[t * N + n] += g * (w->dts[t] * w->us[t]);
            cr = da * g;
        }
        carry[n] = cr;
        gA[n] = ga;
    }
    vf Dk = a->D ? vload(a->D + k * dim + blk->d0, blk->nl) : (vf){0};
    for (int64_t t = 0; t < T; t++) {
        vf gdt = w->gdtA[t] + w->us[t] * w->ghB[t];
        vf gu = w->dts[t] * w->ghB[t] + Dk * w->gys[t];
        w->gDacc[bi] += w->gys[t] * w->us[t];
        if (a->softplus) gdt *= w->sigs[t];
        w->gbacc[bi] += gdt;
        if (a->gdelta) vstore(a->gdelta + ((b * L + w->src[t]) * K + k) * dim + blk->d0, gdt, blk->nl);
        if (a->gu) {
            if (a->u_shared) {
                float *p = a->gu + (b * L + w->src[t]) * dim + blk->d0;
                vstore(p, first_k ? gu : gu + vload(p, blk->nl), blk->nl);
            } else {
                vstore(a->gu + ((b * L + w->src[t]) * K + k) * dim + blk->d0, gu, blk->nl);
            }
        }
    }
}

static inline __attribute__((always_inline)) void bwd_unit(const ScanArgs *a, int64_t unit, Work *w,
                                                           const int N) {
    const int64_t L = a->L, K = a->K, dim = a->dim, T = a->chunk;
    const int64_t b = unit / a->groups, g = unit % a->groups;
    int64_t first, last;
    group_blocks(a, g, &first, &last);
    const int64_t nb = last - first, nc = nchunks(a);
    const int want_w = a->gw != NULL;
    for (int64_t k = 0; k < K; k++) {
        vf gw_acc = (vf){0};
        for (int64_t i = 0; i < nb; i++) {
            Block blk = make_block(a, k, first + i);
            for (int n = 0; n < N; n++) {
                w->carry[i * N + n] = a->g_last
                    ? vload(a->g_last + ((b * K + k) * N + n) * dim + blk.d0, blk.nl) : (vf){0};
                w->gAacc[i * N + n] = (vf){0};
            }
            w->gDacc[i] = (vf){0};
            w->gbacc[i] = (vf){0};
        }
        for (int64_t c = nc - 1; c >= 0; c--) {
            const int64_t s = c * T, e = s + T < L ? s + T : L;
            for (int64_t j = 0; j < (e - s) * N; j++) {
                w->gBv[j] = (vf){0};
                w->gCv[j] = (vf){0};
            }
            for (int64_t i = 0; i < nb; i++) {
                Block blk = make_block(a, k, first + i);
                bwd_chunk(a, b, &blk, i, c, s, e, w, want_w, &gw_acc, k == 0, N);
            }
            for (int64_t t = 0; t < e - s; t++) {
                const int64_t row = (((g * a->batch + b) * L + w->src[t]) * K + k) * N;
                for (int n = 0; n < N; n++) {
                    a->gB[row + n] = hsum(w->gBv[t * N + n]);
                    a->gC[row + n] = hsum(w->gCv[t * N + n]);
                }
            }
        }
        for (int64_t i = 0; i < nb; i++) {
            Block blk = make_block(a, k, first + i);
            for (int n = 0; n < N; n++)
                vstore(a->gA + ((b * K + k) * N + n) * dim + blk.d0, w->gAacc[i * N + n], blk.nl);
            if (a->gD) vstore(a->gD + (b * K + k) * dim + blk.d0, w->gDacc[i], blk.nl);
            if (a->gbias) vstore(a->gbias + (b * K + k) * dim + blk.d0, w->gbacc[i], blk.nl);
        }
        if (want_w) a->gw[(b * a->groups + g) * K + k] = hsum(gw_acc);
    }
}

static void bwd_unit_any(const ScanArgs *a, int64_t unit, Work *w) { bwd_unit(a, unit, w, (int)a->N); }
static void bwd_unit_16(const ScanArgs *a, int64_t unit, Work *w) { bwd_unit(a, unit, w, 16); }

int scan_backward(const ScanArgs *a) {
    const int64_t units = a->batch * a->groups;
    const int64_t nblk = (a->dim + VL - 1) / VL;
    const int64_t blocks = (nblk + a->groups - 1) / a->groups;
    const size_t bytes = ((work_vectors(a, blocks) * sizeof(vf) + 63) / 64) * 64;
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a, units)) reduction(| : failed)
    {
        vf *mem = aligned_alloc(64, bytes);
        int64_t *idx = malloc(3 * (size_t)a->chunk * sizeof(int64_t));
        const int ok = mem && idx; /* every thread must reach the worksharing loop */
        failed = !ok;
        Work w = {0};
        if (ok) {
            work_split(a, blocks, mem, &w);
            w.src = idx;
            w.dst = idx + a->chunk;
            w.row = idx + 2 * a->chunk;
        }
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < units; unit++) {
            if (!ok)
                failed = 1;
            else if (a->N == 16)
                bwd_unit_16(a, unit, &w);
            else
                bwd_unit_any(a, unit, &w);
        }
        free(mem);
        free(idx);
    }
    return failed ? -1 : 0;
}

/* ---- the machine's rates, for the benchmark's floor ----------------------------------- */

/* Seconds per vector operation at this core's peak throughput: `what` 0 times vexp2, 1 a
 * fused multiply-add, each over independent streams (enough to hide latency, few enough to
 * stay in registers). */
double scan_probe(int32_t what, int64_t reps) {
    enum { S = 8 };
    struct timespec t0, t1;
    const vf m = splat(0.9999999f), c = splat(-1e-9f);
    vf x[S], acc[S];
    for (int i = 0; i < S; i++) {
        x[i] = splat(-0.001f * (float)(i + 1));
        acc[i] = (vf){0};
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (what == 0) {
        for (int64_t r = 0; r < reps; r++) {
            _Pragma("GCC unroll 8") for (int i = 0; i < S; i++) {
                x[i] = x[i] * m + c; /* a cheap chain feeding exps that depend on nothing else */
                acc[i] += vexp2(x[i]);
            }
        }
    } else {
        for (int64_t r = 0; r < reps; r++) {
            _Pragma("GCC unroll 8") for (int i = 0; i < S; i++) acc[i] = acc[i] * m + c;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    float sink = 0.f;
    for (int i = 0; i < S; i++) sink += acc[i][0] + x[i][0];
    volatile float keep = sink;
    (void)keep;
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return seconds / ((double)S * (double)reps);
}
