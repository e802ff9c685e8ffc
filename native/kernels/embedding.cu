// embedding.cu — the embedding lookup C[Xb] (forward) and its scatter-add (backward).
//
//   emb    = C[Xb]                 [n,B,E]  gather
//   embcat = emb.view(n, B*E)      [n,B*E]
//   dC     = zeros; dC[Xb[k,j]] += demb[k,j]      (repeated ids accumulate)
//
// Flat occurrence index: k = i*B + j over the n*B ids of Xb ([n,B] row-major), so the
// embedding row of occurrence k is embcat[k*E .. k*E+E) — the same memory as emb[i,j,:].
//
// Backward variants (see README.md for launches):
//   embedding_backward_atomic    atomicAdd, fastest, NOT bitwise reproducible (float adds in
//                                whatever order the hardware picks).
//   embedding_backward_dense     deterministic; one thread per dC cell sums its occurrences
//                                in increasing k.  O(V*E*n*B) work: for small V (e.g. 27).
//   sort-and-segment (large V)   deterministic, no float atomics:
//                                  embedding_sort_histogram + exclusive_scan_int +
//                                  embedding_sort_scatter   (one LSD radix pass per 8 bits of
//                                  id: 1 pass for V <= 256, 2 for V <= 65536), which sorts the
//                                  occurrences by id STABLY (ties keep increasing k), then
//                                  embedding_backward_segments: one warp per run of equal ids,
//                                  lane = column e, rows added in increasing k (bitwise the
//                                  same dC as embedding_backward_dense).
#include "reduce.cuh"

#define HPB_RADIX_BITS 8
#define HPB_RADIX_DIGITS 256

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------

// embcat [n, B*E] = C [V, E] gathered at Xb [n, B]
// grid = ceil(n*B*E / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void embedding_forward(float* embcat, const float* C, const int* Xb, int n, int B, int E) {
    const size_t total = (size_t)n * B * E;
    for (size_t idx = hpb_global_index(); idx < total; idx += hpb_global_stride()) {
        const size_t k = idx / (size_t)E;  // occurrence i*B + j
        const size_t e = idx - k * (size_t)E;
        embcat[idx] = C[(size_t)Xb[k] * E + e];
    }
}

// ---------------------------------------------------------------------------------------
// Backward, atomic (opt-in: fast, order of float additions not reproducible)
// ---------------------------------------------------------------------------------------

// dC [V, E] += scatter of dembcat [n, B*E] by Xb [n, B]; dC must be zeroed by the caller
// grid = ceil(n*B*E / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void embedding_backward_atomic(float* dC, const float* dembcat, const int* Xb, int n, int B,
                                                     int E) {
    const size_t total = (size_t)n * B * E;
    for (size_t idx = hpb_global_index(); idx < total; idx += hpb_global_stride()) {
        const size_t k = idx / (size_t)E;
        const size_t e = idx - k * (size_t)E;
        atomicAdd(&dC[(size_t)Xb[k] * E + e], dembcat[idx]);
    }
}

// ---------------------------------------------------------------------------------------
// Backward, deterministic, small V: one thread per dC cell
// ---------------------------------------------------------------------------------------

// dC [V, E] = scatter of dembcat [n, B*E] by Xb [n, B]; writes EVERY cell (no zeroing needed)
// Thread (v, e) adds dembcat[k*E + e] for k = 0, 1, ..., n*B-1 with Xb[k] == v, in that order.
// grid = ceil(V*E / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void embedding_backward_dense(float* dC, const float* dembcat, const int* Xb, int n, int B,
                                                    int E, int V) {
    const size_t cells = (size_t)V * E;
    const size_t occurrences = (size_t)n * B;
    for (size_t idx = hpb_global_index(); idx < cells; idx += hpb_global_stride()) {
        const int v = (int)(idx / (size_t)E);
        const size_t e = idx - (size_t)v * E;
        float acc = 0.0f;
        for (size_t k = 0; k < occurrences; ++k)
            if (Xb[k] == v) acc += dembcat[k * E + e];
        dC[idx] = acc;
    }
}

// ---------------------------------------------------------------------------------------
// Backward, deterministic, any V: stable LSD radix sort of the occurrences, then segments
// ---------------------------------------------------------------------------------------
//
// Tiles: tile t = blockIdx.x covers occurrences [t*T, t*T+T), T = blockDim.x (<= 1024);
// numTiles = gridDim.x = ceil(M / T), M = n*B.  hist is digit-major: hist[d*numTiles + t]
// = number of occurrences in tile t whose digit is d, so its exclusive scan gives, for
// each (d, t), where tile t's digit-d occurrences start in the output: a stable order.

// hist [256, numTiles] = per-tile counts of digit ((keys[k] >> shift) & 255), keys [M]
// grid = numTiles = ceil(M / T), block = T (1-D, <= 1024; 256 recommended), shared = 0
extern "C" __global__ void __launch_bounds__(1024) embedding_sort_histogram(int* hist, const int* keys, int M, int shift) {
    __shared__ int digits[1024];
    const int T = (int)blockDim.x;
    const int tile = (int)blockIdx.x;
    const int k = tile * T + (int)threadIdx.x;
    digits[threadIdx.x] = (k < M) ? ((keys[k] >> shift) & (HPB_RADIX_DIGITS - 1)) : -1;
    __syncthreads();
    const int len = hpb_min_int(T, M - tile * T);
    for (int d = (int)threadIdx.x; d < HPB_RADIX_DIGITS; d += T) {
        int count = 0;
        for (int t = 0; t < len; ++t) count += (digits[t] == d);
        hist[d * (int)gridDim.x + tile] = count;
    }
}

// data [count] <- exclusive prefix sum of data (in place), count < 2^31
// grid = 1, block = 32*k (<= 1024; 1024 recommended), shared = 0
// Thread r scans the contiguous chunk [r*c, r*c+c), c = ceil(count / blockDim.x).
extern "C" __global__ void __launch_bounds__(1024) exclusive_scan_int(int* data, int count) {
    const int T = (int)blockDim.x;
    const int r = (int)threadIdx.x;
    const int chunk = (count + T - 1) / T;
    const int begin = hpb_min_int(r * chunk, count);
    const int end = hpb_min_int(begin + chunk, count);
    int local = 0;
    for (int i = begin; i < end; ++i) local += data[i];
    int total;
    int running = block_exclusive_scan_int(local, &total);
    for (int i = begin; i < end; ++i) {
        const int x = data[i];
        data[i] = running;
        running += x;
    }
}

// keys_out/vals_out [M] = keys_in/vals_in [M] moved to their stable sorted position by digit
// vals_in == NULL means vals_in[k] = k (first pass: the occurrence index itself).
// offsets [256, numTiles] = exclusive scan of embedding_sort_histogram's output.
// grid = numTiles = ceil(M / T), block = T (same T as the histogram), shared = 0
extern "C" __global__ void __launch_bounds__(1024) embedding_sort_scatter(int* keys_out, int* vals_out, const int* keys_in, const int* vals_in,
                                                  const int* offsets, int M, int shift) {
    __shared__ int digits[1024];
    const int T = (int)blockDim.x;
    const int tile = (int)blockIdx.x;
    const int r = (int)threadIdx.x;
    const int k = tile * T + r;
    const int key = (k < M) ? keys_in[k] : 0;
    const int digit = (key >> shift) & (HPB_RADIX_DIGITS - 1);
    digits[r] = (k < M) ? digit : -1;
    __syncthreads();
    if (k < M) {
        int rank = 0;  // earlier occurrences of the same digit in this tile
        for (int t = 0; t < r; ++t) rank += (digits[t] == digit);
        const int dest = offsets[digit * (int)gridDim.x + tile] + rank;
        keys_out[dest] = key;
        vals_out[dest] = vals_in ? vals_in[k] : k;
    }
}

// dC [V, E]: for each run of equal ids in sorted_ids [M], dC[id, e] = sum over the run of
// dembcat [n, B*E] at row sorted_rows[q] (occurrence k), column e.  dC must be zeroed by the
// caller (ids that never occur are not written).
// Warps loop over sorted positions p (grid-stride, uniform per warp); the warp at a run head
// does that run, lane l the columns e = l, l+32, ...: it adds the run's rows in sorted order,
// which is increasing k (the sort is stable) — the same order as embedding_backward_dense,
// so both deterministic paths give bitwise the same dC.  Lanes read adjacent floats of one
// row (coalesced); no warp-synchronous operations.
// grid = ceil(M / (blockDim.x/32)) (any), block = 32*k (1-D; 256 recommended), shared = 0
extern "C" __global__ void embedding_backward_segments(float* dC, const float* dembcat, const int* sorted_ids,
                                                       const int* sorted_rows, int M, int E) {
    const int lane = (int)(threadIdx.x & 31u);
    const long long warps_per_block = blockDim.x >> 5;
    const long long stride = (long long)gridDim.x * warps_per_block;
    for (long long p = blockIdx.x * warps_per_block + (threadIdx.x >> 5); p < M; p += stride) {
        const int id = sorted_ids[p];
        if (p > 0 && sorted_ids[p - 1] == id) continue;  // not a run head
        for (int e = lane; e < E; e += 32) {
            float acc = 0.0f;
            for (long long q = p; q < M && sorted_ids[q] == id; ++q) acc += dembcat[(size_t)sorted_rows[q] * E + e];
            dC[(size_t)id * E + e] = acc;
        }
    }
}
