// step_state.h — the training step's state in device memory: what changes from one step to the next
// (the optimiser step, the learning rate, AdamW's bias corrections, the loss slot), so that one
// captured CUDA graph replays every step.  Plain C, shared by the kernels, the emulator's registry and
// the native tests; the C# side writes the same layout (Gpu/StepState.cs).
//
// One allocation: this header, then `rows` schedule rows of 3 floats {lr, step_size, bc2_sqrt}
// written by the host (computed in double as the CPU does).  step_begin, the first node of every
// training step, takes the step number `next`, advances it, and copies the step's row into lr,
// step_size and bc2_sqrt, where the optimisers read them; the dropout kernels and draw_minibatch read
// `current`; the loss goes to slot `current % ring` of the loss ring, which the host reads every few steps.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hpb_step {
    unsigned long long next;     //  0  the optimiser step (dropout's step) of the next training step (host-set)
    unsigned long long current;  //  8  the step running now (written by step_begin)
    unsigned long long base;     // 16  the step of schedule row 0
    unsigned int rows;           // 24  schedule rows (>= 1)
    unsigned int stride;         // 28  1: the row of step t is t - base; 0: row 0 for every step
    unsigned int ring;           // 32  slots of the loss ring (>= 1)
    unsigned int slot;           // 36  this step's slot: current % ring
    unsigned int fault;          // 40  1 once a step found no row of its own (a host bug; the host checks it)
    float lr;                    // 44  this step's learning rate
    float step_size;             // 48  AdamW: (float)(lr / (1 - beta1^t))
    float bc2_sqrt;              // 52  AdamW: (float)sqrt(1 - beta2^t)
    unsigned int draw_seed;      // 56  the seed of the minibatches draw_minibatch draws (host-set)
    unsigned int pad;            // 60
} hpb_step;                      // 64 bytes, then the rows

#define HPB_STEP_ROW_FLOATS 3

#ifdef __cplusplus
}
#endif
