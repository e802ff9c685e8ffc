// philox.cuh — Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw,
// "Parallel random numbers: as easy as 1, 2, 3" (SC'11), with Random123's constants.
//
// Written for both sides: __host__ __device__ under nvcc, plain inline C++ otherwise, with no
// other include, so the native tests (and any host code) compute exactly the GPU's bits.
//
// One round on the counter (c0, c1, c2, c3) with the key (k0, k1):
//   (hi0, lo0) = M0 * c0   (the 64-bit product's halves)      M0 = 0xD2511F53
//   (hi1, lo1) = M1 * c2                                       M1 = 0xCD9E8D57
//   c' = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
// Ten rounds; between two rounds the key is bumped: k0 += W0 = 0x9E3779B9, k1 += W1 = 0xBB67AE85
// (mod 2^32).  Known answers (Random123's kat_vectors, philox4x32 with 10 rounds):
//   ctr {0,0,0,0}                     key {0,0}                     -> {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}
//   ctr {0xffffffff x4}               key {0xffffffff x2}           -> {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}
//   ctr {0x243f6a88, 0x85a308d3,
//        0x13198a2e, 0x03707344}      key {0xa4093822, 0x299f31d0}  -> {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}
//
// The dropout mask (dropout.cu): element i of layer `layer` at step (step_hi:step_lo) with seed `seed` is
// kept when philox({i/4, 0, step_lo, step_hi}, {seed, layer})[i%4] >= threshold.
#pragma once

#ifdef __CUDACC__
#define HPB_PHILOX_FN __host__ __device__ __forceinline__
#else
#define HPB_PHILOX_FN inline
#endif

struct HpbPhilox4 {
    unsigned v[4];
};

#define HPB_PHILOX_M0 0xD2511F53u
#define HPB_PHILOX_M1 0xCD9E8D57u
#define HPB_PHILOX_W0 0x9E3779B9u
#define HPB_PHILOX_W1 0xBB67AE85u

HPB_PHILOX_FN HpbPhilox4 hpb_philox_round(HpbPhilox4 c, unsigned k0, unsigned k1) {
    const unsigned long long p0 = (unsigned long long)HPB_PHILOX_M0 * c.v[0];
    const unsigned long long p1 = (unsigned long long)HPB_PHILOX_M1 * c.v[2];
    HpbPhilox4 r;
    r.v[0] = (unsigned)(p1 >> 32) ^ c.v[1] ^ k0;
    r.v[1] = (unsigned)p1;
    r.v[2] = (unsigned)(p0 >> 32) ^ c.v[3] ^ k1;
    r.v[3] = (unsigned)p0;
    return r;
}

// Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1).
HPB_PHILOX_FN HpbPhilox4 hpb_philox4x32_10(unsigned c0, unsigned c1, unsigned c2, unsigned c3, unsigned k0,
                                           unsigned k1) {
    HpbPhilox4 c;
    c.v[0] = c0;
    c.v[1] = c1;
    c.v[2] = c2;
    c.v[3] = c3;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += HPB_PHILOX_W0;
            k1 += HPB_PHILOX_W1;
        }
        c = hpb_philox_round(c, k0, k1);
    }
    return c;
}
