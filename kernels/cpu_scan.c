/* The compiled CPU selective scan: forward and backward of the ``cpu`` backend.
 *
 * Plain C99 with GCC/Clang vector extensions: one vector holds VL channels (16 floats
 * where AVX-512 is enabled, else 8), so the same source becomes AVX-512, AVX2, NEON or
 * scalar code depending on the machine it is built on (-march=native). The only intrinsics,
 * AVX min and max, sit behind #ifdef with a portable fallback.
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
 * A unit walks each direction in chunks of `chunk` steps: it reads a chunk's rows once, row
 * by row for all its blocks, runs each block's recurrence four states at a time, and writes
 * the outputs row by row again. The forward keeps the state at the end of every chunk; the
 * backward walks the chunks in reverse, recomputes a chunk's states from the checkpoint
 * before it, and runs the adjoint recurrence over them.
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

/* 2^x for x in [-126, 128]: x = n + f with n an integer and |f| <= 1/2, a degree-5
 * polynomial for 2^f (fitted to relative error 1.0e-7, 1.9e-7 after fp32 rounding), and n
 * added to its exponent bits. Adding 1.5 * 2^23 rounds x to an integer n held in the low mantissa bits
 * (two's complement below 2^22); shifted left by 23 they are n << 23, every higher bit
 * falling off. With x >= -126 the result's exponent field stays >= 1, so the integer add
 * of n to p's exponent is exact. */
static inline vf vexp2_unclamped(vf x) {
    const vf magic = splat(12582912.f); /* 1.5 * 2^23 */
    vf t = x + magic;
    vf f = x - (t - magic);
    vf p = splat(1.32186725e-3f) * f + splat(9.67169794e-3f);
    p = p * f + splat(5.55089295e-2f);
    p = p * f + splat(2.40222380e-1f);
    p = p * f + splat(6.93146856e-1f);
    p = p * f + splat(1.f);
    return (vf)((vi)p + ((vi)t << 23));
}

/* 2^x for any x: clamped to [-126, 128] first, so 2^-126 (the smallest normal) stands for
 * anything smaller and 2^128 is inf. The recurrence skips the clamps for a chunk whose decay
 * arguments are known to lie in range (see unclamped()). */
static inline vf vexp2(vf x) { return vexp2_unclamped(vmin(splat(128.f), vmax(splat(-126.f), x))); }

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

static inline int64_t src_row(const ScanArgs *a, int64_t k, int64_t t) {
    return a->gather ? a->orders[k * a->L + t] : t;
}

static inline int64_t dst_row(const ScanArgs *a, int64_t k, int64_t t) {
    return a->mode == HEADS ? t : a->orders[k * a->L + t];
}

static inline int64_t nchunks(const ScanArgs *a) { return (a->L + a->chunk - 1) / a->chunk; }

static inline float *ckpt_at(const ScanArgs *a, int64_t b, int64_t k, int64_t c) {
    return a->ckpts + ((b * a->K + k) * nchunks(a) + c) * a->N * a->dim;
}

static inline int64_t num_blocks(const ScanArgs *a) { return (a->dim + VL - 1) / VL; }

/* Channel blocks of group g: [first, first + nb) in units of VL channels. */
static inline void group_blocks(const ScanArgs *a, int64_t g, int64_t *first, int64_t *nb) {
    *first = g * num_blocks(a) / a->groups;
    *nb = (g + 1) * num_blocks(a) / a->groups - *first;
}

static inline int64_t max_group_blocks(const ScanArgs *a) { return (num_blocks(a) + a->groups - 1) / a->groups; }

static inline int lanes_of(const ScanArgs *a, int64_t d0) { return (int)(a->dim - d0 < VL ? a->dim - d0 : VL); }

static inline float hmax(vf v, int nl) {
    float m = v[0];
    for (int i = 1; i < nl; i++) m = v[i] > m || v[i] != v[i] ? v[i] : m;
    return m;
}

static inline float hmin(vf v, int nl) {
    float m = v[0];
    for (int i = 1; i < nl; i++) m = v[i] < m || v[i] != v[i] ? v[i] : m;
    return m;
}

/* The largest |A| of a block of direction k when every A there is <= 0, else -1: with it, a
 * chunk whose dt log2(e) lies in [0, 126 / that] needs no clamping of the decays' exps. */
static inline float decay_reach(const ScanArgs *a, int64_t k, int64_t d0, int nl) {
    float reach = 0.f;
    for (int64_t n = 0; n < a->N; n++) {
        const float *row = a->At + (k * a->N + n) * a->dim + d0;
        for (int i = 0; i < nl; i++) {
            if (!(row[i] <= 0.f)) return -1.f; /* positive or NaN */
            reach = -row[i] > reach ? -row[i] : reach;
        }
    }
    return reach;
}

static inline int unclamped(float reach, vf lo, vf hi, int nl) {
    if (reach < 0.f) return 0;
    const float l = hmin(lo, nl), h = hmax(hi, nl);
    return l >= 0.f && h * reach <= 120.f; /* NaN fails both comparisons: clamped */
}

/* A chunk's step inputs for every block of a unit, read row by row (one row's blocks are
 * contiguous in memory): dt (after bias and softplus), dt log2(e), dt u and u at [i T + t]
 * for block i, the pre-softplus sigmoid when `sig` is given (the backward), and the range of
 * dt log2(e) per block in lo and hi. Also each step's rows: read, written, and of B and C. */
typedef struct {
    vf *dt, *dt2, *dtu, *u, *sig; /* nb x T */
    vf *lo, *hi, *bias;           /* nb */
    int64_t *src, *dst, *row;     /* T */
} Steps;

static inline void step_inputs(const ScanArgs *a, int64_t b, int64_t k, int64_t s, int64_t T, int64_t first,
                               int64_t nb, Steps *st) {
    const int64_t K = a->K, L = a->L, dim = a->dim, T0 = a->chunk;
    for (int64_t t = 0; t < T; t++) {
        const int64_t r = src_row(a, k, s + t);
        st->src[t] = r;
        st->dst[t] = dst_row(a, k, s + t);
        st->row[t] = ((b * L + r) * K + k) * a->N;
        const float *drow = a->delta + ((b * L + r) * K + k) * dim;
        const float *urow = a->u_shared ? a->u + (b * L + r) * dim : a->u + ((b * L + r) * K + k) * dim;
        for (int64_t i = 0; i < nb; i++) {
            const int64_t d0 = (first + i) * VL;
            const int nl = lanes_of(a, d0);
            vf x = vload(drow + d0, nl) + st->bias[i];
            if (a->softplus) {
                if (st->sig) st->sig[i * T0 + t] = vsigmoid(x);
                x = vsoftplus(x);
            }
            const vf u = vload(urow + d0, nl), x2 = x * LOG2E;
            st->dt[i * T0 + t] = x;
            st->dt2[i * T0 + t] = x2;
            st->dtu[i * T0 + t] = x * u;
            st->u[i * T0 + t] = u;
            st->lo[i] = t == 0 ? x2 : vmin(st->lo[i], x2);
            st->hi[i] = t == 0 ? x2 : vmax(st->hi[i], x2);
        }
    }
}

/* The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t of one block over T steps for states
 * [n0, n0 + G), t inner: the G states live in registers while the steps stream past.
 * ys[t] += C_t . h_t (over those states) when ys is given; hs[(t + 1) N + n] = h_t and
 * dA[t N + n] = exp(dt_t A_n) when hs is. */
static inline __attribute__((always_inline)) void recur_group(const ScanArgs *a, const float *Ak, int nl,
                                                               const int64_t *row, const vf *dt2, const vf *dtu,
                                                               int64_t T, vf *h, vf *ys, vf *hs, vf *dA, int n0,
                                                               const int G, const int N, const int clamp) {
    vf An[4], hn[4];
    for (int j = 0; j < G; j++) {
        An[j] = vload(Ak + (int64_t)(n0 + j) * a->dim, nl);
        hn[j] = h[n0 + j];
    }
    for (int64_t t = 0; t < T; t++) {
        vf y = (vf){0};
        for (int j = 0; j < G; j++) {
            const int n = n0 + j;
            const vf x = dt2[t] * An[j];
            const vf da = clamp ? vexp2(x) : vexp2_unclamped(x);
            hn[j] = da * hn[j] + dtu[t] * a->B[row[t] + n];
            if (ys) y += hn[j] * a->C[row[t] + n];
            if (hs) {
                dA[t * N + n] = da;
                hs[(t + 1) * N + n] = hn[j];
            }
        }
        if (ys) ys[t] += y;
    }
    for (int j = 0; j < G; j++) h[n0 + j] = hn[j];
}

static inline __attribute__((always_inline)) void recur(const ScanArgs *a, const float *Ak, int nl,
                                                         const int64_t *row, const vf *dt2, const vf *dtu,
                                                         int64_t T, vf *h, vf *ys, vf *hs, vf *dA, const int N,
                                                         const int clamp) {
    int n = 0; /* four states at a time: four independent chains per step */
    for (; n + 4 <= N; n += 4) recur_group(a, Ak, nl, row, dt2, dtu, T, h, ys, hs, dA, n, 4, N, clamp);
    for (; n < N; n++) recur_group(a, Ak, nl, row, dt2, dtu, T, h, ys, hs, dA, n, 1, N, clamp);
}

/* ---- forward --------------------------------------------------------------------------- */

typedef struct {
    Steps st;
    vf *ys, *hst, *D; /* nb x T; nb x N states waiting between chunks; nb */
    float *reach;     /* nb */
} Fwd;

static size_t fwd_vectors(const ScanArgs *a) {
    const size_t nb = (size_t)max_group_blocks(a), T = (size_t)a->chunk, N = (size_t)a->N;
    return 5 * nb * T + nb * N + 4 * nb;
}

static void fwd_split(const ScanArgs *a, vf *m, float *reach, int64_t *idx, Fwd *f) {
    const int64_t nb = max_group_blocks(a), T = a->chunk;
    f->st.dt = m;
    f->st.dt2 = f->st.dt + nb * T;
    f->st.dtu = f->st.dt2 + nb * T;
    f->st.u = f->st.dtu + nb * T;
    f->ys = f->st.u + nb * T;
    f->hst = f->ys + nb * T;
    f->st.lo = f->hst + nb * a->N;
    f->st.hi = f->st.lo + nb;
    f->st.bias = f->st.hi + nb;
    f->D = f->st.bias + nb;
    f->st.sig = NULL;
    f->reach = reach;
    f->st.src = idx;
    f->st.dst = idx + T;
    f->st.row = idx + 2 * T;
}

static void per_block_constants(const ScanArgs *a, int64_t k, int64_t first, int64_t nb, vf *bias, vf *D,
                                float *reach) {
    for (int64_t i = 0; i < nb; i++) {
        const int64_t d0 = (first + i) * VL;
        const int nl = lanes_of(a, d0);
        bias[i] = a->bias ? vload(a->bias + k * a->dim + d0, nl) : (vf){0};
        D[i] = a->D ? vload(a->D + k * a->dim + d0, nl) : (vf){0};
        reach[i] = decay_reach(a, k, d0, nl);
    }
}

static inline __attribute__((always_inline)) void fwd_unit(const ScanArgs *a, int64_t unit, Fwd *f, const int N) {
    const int64_t L = a->L, K = a->K, dim = a->dim, T0 = a->chunk;
    const int64_t b = unit / a->groups, g = unit % a->groups;
    int64_t first, nb;
    group_blocks(a, g, &first, &nb);
    /* chunk-major: a chunk's rows are read (and its outputs written) once, row by row, for all
     * the unit's blocks; each block's states wait in hst between chunks */
    for (int64_t k = 0; k < K; k++) {
        const float wk = a->weights ? a->weights[k] : 1.f;
        per_block_constants(a, k, first, nb, f->st.bias, f->D, f->reach);
        for (int64_t j = 0; j < nb * N; j++) f->hst[j] = (vf){0};
        for (int64_t c = 0, s = 0; s < L; c++, s += T0) {
            const int64_t T = s + T0 < L ? T0 : L - s;
            step_inputs(a, b, k, s, T, first, nb, &f->st);
            for (int64_t i = 0; i < nb; i++) {
                const int64_t d0 = (first + i) * VL;
                const int nl = lanes_of(a, d0);
                vf *h = f->hst + i * N, *ys = f->ys + i * T0;
                const vf *dt2 = f->st.dt2 + i * T0, *dtu = f->st.dtu + i * T0;
                const float *Ak = a->At + k * N * dim + d0;
                for (int64_t t = 0; t < T; t++) ys[t] = (vf){0};
                if (unclamped(f->reach[i], f->st.lo[i], f->st.hi[i], nl))
                    recur(a, Ak, nl, f->st.row, dt2, dtu, T, h, ys, NULL, NULL, N, 0);
                else
                    recur(a, Ak, nl, f->st.row, dt2, dtu, T, h, ys, NULL, NULL, N, 1);
                float *ck = ckpt_at(a, b, k, c) + d0;
                for (int n = 0; n < N; n++) vstore(ck + (int64_t)n * dim, h[n], nl);
            }
            for (int64_t t = 0; t < T; t++) {
                float *orow = a->mode == MERGE ? a->out + (b * L + f->st.dst[t]) * dim
                                               : a->out + ((b * L + f->st.dst[t]) * K + k) * dim;
                for (int64_t i = 0; i < nb; i++) {
                    const int64_t d0 = (first + i) * VL;
                    const int nl = lanes_of(a, d0);
                    const vf y = f->ys[i * T0 + t] + f->D[i] * f->st.u[i * T0 + t];
                    if (a->mode == MERGE) {
                        const vf acc = k == 0 ? (vf){0} : vload(orow + d0, nl);
                        vstore(orow + d0, acc + y * wk, nl);
                    } else {
                        vstore(orow + d0, y, nl);
                    }
                }
            }
        }
    }
    if (!a->z) return;
    /* the gate, row by row: out = ysum * silu(z), ysum kept for the backward */
    const int64_t dirs = a->mode == MERGE ? 1 : K;
    for (int64_t l = 0; l < L; l++) {
        for (int64_t k = 0; k < dirs; k++) {
            const int64_t base = a->mode == MERGE ? (b * L + l) * dim : ((b * L + l) * K + k) * dim;
            const float *zrow = a->z + (a->mode == HEADS ? base : (b * L + l) * dim);
            for (int64_t i = 0; i < nb; i++) {
                const int64_t d0 = (first + i) * VL;
                const int nl = lanes_of(a, d0);
                const vf z = vload(zrow + d0, nl), y = vload(a->out + base + d0, nl);
                vstore(a->ysum + base + d0, y, nl);
                vstore(a->out + base + d0, y * (z * vsigmoid(z)), nl);
            }
        }
    }
}

static void fwd_unit_any(const ScanArgs *a, int64_t unit, Fwd *f) { fwd_unit(a, unit, f, (int)a->N); }
static void fwd_unit_16(const ScanArgs *a, int64_t unit, Fwd *f) { fwd_unit(a, unit, f, 16); }
static void fwd_unit_8(const ScanArgs *a, int64_t unit, Fwd *f) { fwd_unit(a, unit, f, 8); }

static int64_t threads_for(const ScanArgs *a, int64_t units) {
    int64_t t = a->threads < 1 ? 1 : a->threads;
    return t < units ? t : units;
}

static void *alloc_vectors(size_t n) { return aligned_alloc(64, ((n * sizeof(vf) + 63) / 64) * 64); }

int scan_forward(const ScanArgs *a) {
    const int64_t units = a->batch * a->groups;
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a, units)) reduction(| : failed)
    {
        vf *mem = alloc_vectors(fwd_vectors(a));
        float *reach = malloc((size_t)max_group_blocks(a) * sizeof(float));
        int64_t *idx = malloc(3 * (size_t)a->chunk * sizeof(int64_t));
        const int ok = mem && reach && idx; /* every thread must reach the worksharing loop */
        failed = !ok;
        Fwd f = {0};
        if (ok) fwd_split(a, mem, reach, idx, &f);
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < units; unit++) {
            if (!ok)
                failed = 1;
            else if (a->N == 16) /* the published models' d_state, and the micro presets' */
                fwd_unit_16(a, unit, &f);
            else if (a->N == 8)
                fwd_unit_8(a, unit, &f);
            else
                fwd_unit_any(a, unit, &f);
        }
        free(mem);
        free(reach);
        free(idx);
    }
    return failed ? -1 : 0;
}

/* ---- backward -------------------------------------------------------------------------- */

typedef struct {  /* a unit's working memory */
    Steps st;
    vf *gy, *gyu, *gdt, *gu; /* nb x T: weighted and unweighted output gradient; dt's and u's */
    vf *carry, *gA;          /* nb x N: gradient reaching a chunk's last state from the next; dA */
    vf *gD, *gb, *D;         /* nb */
    vf *hs, *dA;             /* (T + 1) x N: h before the chunk, then after each step; T x N decays */
    vf *gBv, *gCv;           /* T x N lane partials of dB, dC, summed over the unit's blocks */
    vf *ghB, *gdtA;          /* T */
    float *reach;            /* nb */
} Bwd;

static size_t bwd_vectors(const ScanArgs *a) {
    const size_t nb = (size_t)max_group_blocks(a), T = (size_t)a->chunk, N = (size_t)a->N;
    return 9 * nb * T + 2 * nb * N + 6 * nb + (T + 1) * N + 3 * T * N + 2 * T;
}

static void bwd_split(const ScanArgs *a, vf *m, float *reach, int64_t *idx, Bwd *w) {
    const int64_t nb = max_group_blocks(a), T = a->chunk, N = a->N;
    vf **nbT[] = {&w->st.dt, &w->st.dt2, &w->st.dtu, &w->st.u, &w->st.sig, &w->gy, &w->gyu, &w->gdt, &w->gu};
    for (size_t j = 0; j < sizeof nbT / sizeof *nbT; j++, m += nb * T) *nbT[j] = m;
    w->carry = m;
    w->gA = w->carry + nb * N;
    w->gD = w->gA + nb * N;
    w->gb = w->gD + nb;
    w->D = w->gb + nb;
    w->st.lo = w->D + nb;
    w->st.hi = w->st.lo + nb;
    w->st.bias = w->st.hi + nb;
    w->hs = w->st.bias + nb;
    w->dA = w->hs + (T + 1) * N;
    w->gBv = w->dA + T * N;
    w->gCv = w->gBv + T * N;
    w->ghB = w->gCv + T * N;
    w->gdtA = w->ghB + T;
    w->reach = reach;
    w->st.src = idx;
    w->st.dst = idx + T;
    w->st.row = idx + 2 * T;
}

/* The adjoint recurrence for states [n0, n0 + G) of one block over a chunk, t backwards:
 * gh_t = gy_t C_t + carry, carry = dA_t gh_t; the gradients of dt A (summed over states,
 * into gdtA), A, B (lane partials gBv), C (gCv) and of dt u B (summed over states, ghB). */
static inline __attribute__((always_inline)) void adjoint(const ScanArgs *a, Bwd *w, const float *Ak, int nl,
                                                          const int64_t *row, const vf *gy, const vf *dt,
                                                          const vf *dtu, int64_t T, vf *carry, vf *gA, int n0,
                                                          const int G, const int N) {
    vf An[4], cr[4], ga[4];
    for (int j = 0; j < G; j++) {
        An[j] = vload(Ak + (int64_t)(n0 + j) * a->dim, nl);
        cr[j] = carry[n0 + j];
        ga[j] = gA[n0 + j];
    }
    for (int64_t t = T - 1; t >= 0; t--) {
        const vf gyt = gy[t], dtt = dt[t], dtut = dtu[t];
        vf sA = (vf){0}, sB = (vf){0};
        for (int j = 0; j < G; j++) {
            const int n = n0 + j;
            const vf g = gyt * a->C[row[t] + n] + cr[j];
            w->gCv[t * N + n] += gyt * w->hs[(t + 1) * N + n];
            const vf da = w->dA[t * N + n];
            const vf X = g * da * w->hs[t * N + n];
            sA += X * An[j];
            ga[j] += X * dtt;
            sB += g * a->B[row[t] + n];
            w->gBv[t * N + n] += g * dtut;
            cr[j] = da * g;
        }
        w->gdtA[t] += sA;
        w->ghB[t] += sB;
    }
    for (int j = 0; j < G; j++) {
        carry[n0 + j] = cr[j];
        gA[n0 + j] = ga[j];
    }
}

/* One chunk of block i, backwards: recompute its states from the checkpoint, then walk the
 * adjoint recurrence gh_t = gy_t C_t + dA_{t+1} gh_{t+1} in reverse. */
static inline __attribute__((always_inline)) void bwd_block(const ScanArgs *a, int64_t b, int64_t k, int64_t c,
                                                            int64_t i, int64_t d0, int64_t T, Bwd *w,
                                                            int want_w, vf *gw_acc, const int N) {
    const int64_t dim = a->dim, T0 = a->chunk;
    const int nl = lanes_of(a, d0);
    const vf *dt = w->st.dt + i * T0, *dt2 = w->st.dt2 + i * T0, *dtu = w->st.dtu + i * T0;
    const vf *u = w->st.u + i * T0, *gy = w->gy + i * T0;
    const int64_t *row = w->st.row;
    vf *carry = w->carry + i * N, *gA = w->gA + i * N;
    const float *Ak = a->At + k * N * dim + d0;
    if (c == 0) {
        for (int n = 0; n < N; n++) w->hs[n] = (vf){0};
    } else {
        const float *ck = ckpt_at(a, b, k, c - 1) + d0;
        for (int n = 0; n < N; n++) w->hs[n] = vload(ck + (int64_t)n * dim, nl);
    }
    vf h[N];
    for (int n = 0; n < N; n++) h[n] = w->hs[n];
    if (unclamped(w->reach[i], w->st.lo[i], w->st.hi[i], nl))
        recur(a, Ak, nl, row, dt2, dtu, T, h, NULL, w->hs, w->dA, N, 0);
    else
        recur(a, Ak, nl, row, dt2, dtu, T, h, NULL, w->hs, w->dA, N, 1);
    if (want_w) { /* dL/dw_k = sum gg * y_k, y_k = C . h + D u */
        const vf *gyu = w->gyu + i * T0;
        for (int64_t t = 0; t < T; t++) {
            vf y = w->D[i] * u[t];
            for (int n = 0; n < N; n++) y += w->hs[(t + 1) * N + n] * a->C[row[t] + n];
            *gw_acc += gyu[t] * y;
        }
    }
    for (int64_t t = 0; t < T; t++) {
        w->ghB[t] = (vf){0};
        w->gdtA[t] = (vf){0};
    }
    /* adjoint, t backwards, four states at a time (their sums over states stay in registers) */
    int n = 0;
    for (; n + 4 <= N; n += 4) adjoint(a, w, Ak, nl, row, gy, dt, dtu, T, carry, gA, n, 4, N);
    for (; n < N; n++) adjoint(a, w, Ak, nl, row, gy, dt, dtu, T, carry, gA, n, 1, N);
    const vf *sig = w->st.sig + i * T0;
    vf *gdt = w->gdt + i * T0, *gu = w->gu + i * T0;
    for (int64_t t = 0; t < T; t++) {
        vf d = w->gdtA[t] + u[t] * w->ghB[t];
        gu[t] = dt[t] * w->ghB[t] + w->D[i] * gy[t];
        w->gD[i] += gy[t] * u[t];
        if (a->softplus) d *= sig[t];
        w->gb[i] += d;
        gdt[t] = d;
    }
}

static inline __attribute__((always_inline)) void bwd_unit(const ScanArgs *a, int64_t unit, Bwd *w, const int N) {
    const int64_t L = a->L, K = a->K, dim = a->dim, T0 = a->chunk;
    const int64_t b = unit / a->groups, g = unit % a->groups;
    int64_t first, nb;
    group_blocks(a, g, &first, &nb);
    const int64_t nc = nchunks(a);
    const int want_w = a->gw != NULL;
    for (int64_t k = 0; k < K; k++) {
        const float wk = a->weights ? a->weights[k] : 1.f;
        vf gw_acc = (vf){0};
        per_block_constants(a, k, first, nb, w->st.bias, w->D, w->reach);
        for (int64_t i = 0; i < nb; i++) {
            const int64_t d0 = (first + i) * VL;
            const int nl = lanes_of(a, d0);
            for (int n = 0; n < N; n++) {
                w->carry[i * N + n] = a->g_last
                    ? vload(a->g_last + ((b * K + k) * N + n) * dim + d0, nl) : (vf){0};
                w->gA[i * N + n] = (vf){0};
            }
            w->gD[i] = (vf){0};
            w->gb[i] = (vf){0};
        }
        for (int64_t c = nc - 1; c >= 0; c--) {
            const int64_t s = c * T0, T = s + T0 < L ? T0 : L - s;
            step_inputs(a, b, k, s, T, first, nb, &w->st);
            for (int64_t t = 0; t < T; t++) { /* the output gradient each step receives, row by row */
                const float *grow = a->mode == MERGE ? a->gg + (b * L + w->st.dst[t]) * dim
                                                     : a->gg + ((b * L + w->st.dst[t]) * K + k) * dim;
                for (int64_t i = 0; i < nb; i++) {
                    const int64_t d0 = (first + i) * VL;
                    const vf v = vload(grow + d0, lanes_of(a, d0));
                    w->gyu[i * T0 + t] = v;
                    w->gy[i * T0 + t] = v * wk;
                }
            }
            for (int64_t j = 0; j < T * N; j++) {
                w->gBv[j] = (vf){0};
                w->gCv[j] = (vf){0};
            }
            for (int64_t i = 0; i < nb; i++)
                bwd_block(a, b, k, c, i, (first + i) * VL, T, w, want_w, &gw_acc, N);
            for (int64_t t = 0; t < T; t++) {
                const int64_t r = w->st.src[t];
                const int64_t brow = (((g * a->batch + b) * L + r) * K + k) * N;
                for (int n = 0; n < N; n++) {
                    a->gB[brow + n] = hsum(w->gBv[t * N + n]);
                    a->gC[brow + n] = hsum(w->gCv[t * N + n]);
                }
                float *drow = a->gdelta ? a->gdelta + ((b * L + r) * K + k) * dim : NULL;
                float *urow = !a->gu ? NULL : a->u_shared ? a->gu + (b * L + r) * dim
                                                          : a->gu + ((b * L + r) * K + k) * dim;
                for (int64_t i = 0; i < nb; i++) {
                    const int64_t d0 = (first + i) * VL;
                    const int nl = lanes_of(a, d0);
                    if (drow) vstore(drow + d0, w->gdt[i * T0 + t], nl);
                    if (urow) {
                        const vf v = w->gu[i * T0 + t];
                        vstore(urow + d0, a->u_shared && k > 0 ? v + vload(urow + d0, nl) : v, nl);
                    }
                }
            }
        }
        for (int64_t i = 0; i < nb; i++) {
            const int64_t d0 = (first + i) * VL;
            const int nl = lanes_of(a, d0);
            for (int n = 0; n < N; n++)
                vstore(a->gA + ((b * K + k) * N + n) * dim + d0, w->gA[i * N + n], nl);
            if (a->gD) vstore(a->gD + (b * K + k) * dim + d0, w->gD[i], nl);
            if (a->gbias) vstore(a->gbias + (b * K + k) * dim + d0, w->gb[i], nl);
        }
        if (want_w) a->gw[(b * a->groups + g) * K + k] = hsum(gw_acc);
    }
}

static void bwd_unit_any(const ScanArgs *a, int64_t unit, Bwd *w) { bwd_unit(a, unit, w, (int)a->N); }
static void bwd_unit_16(const ScanArgs *a, int64_t unit, Bwd *w) { bwd_unit(a, unit, w, 16); }
static void bwd_unit_8(const ScanArgs *a, int64_t unit, Bwd *w) { bwd_unit(a, unit, w, 8); }

int scan_backward(const ScanArgs *a) {
    const int64_t units = a->batch * a->groups;
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a, units)) reduction(| : failed)
    {
        vf *mem = alloc_vectors(bwd_vectors(a));
        float *reach = malloc((size_t)max_group_blocks(a) * sizeof(float));
        int64_t *idx = malloc(3 * (size_t)a->chunk * sizeof(int64_t));
        const int ok = mem && reach && idx; /* every thread must reach the worksharing loop */
        failed = !ok;
        Bwd w = {0};
        if (ok) bwd_split(a, mem, reach, idx, &w);
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < units; unit++) {
            if (!ok)
                failed = 1;
            else if (a->N == 16)
                bwd_unit_16(a, unit, &w);
            else if (a->N == 8)
                bwd_unit_8(a, unit, &w);
            else
                bwd_unit_any(a, unit, &w);
        }
        free(mem);
        free(reach);
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
