// kernel_list.h — THE kernel contract: every kernel's name and parameter list, once.
//
// X-macro: HPB_KERNEL(name, params...).  hpb_common.cuh expands it into prototypes (so each
// definition in a .cu file is checked against this list by nvcc and by the host compiler),
// and the emulator's registry expands it into its launch table (hpb_emu_launch by name).
// The C# backend launches these by name with cuLaunchKernel-style argument arrays, so the
// parameter order and types here are an ABI: change them only together with the C# side.
// Launch configurations: README.md.  hpb_step (the training step's state): step_state.h, included first.
// No include guard: meant to be included several times with different HPB_KERNEL.

// ---- embedding.cu
HPB_KERNEL(embedding_forward, float* embcat, const float* C, const int* Xb, int n, int B, int E)
HPB_KERNEL(embedding_backward_atomic, float* dC, const float* dembcat, const int* Xb, int n, int B, int E)
HPB_KERNEL(embedding_backward_dense, float* dC, const float* dembcat, const int* Xb, int n, int B, int E, int V)
HPB_KERNEL(embedding_sort_histogram, int* hist, const int* keys, int M, int shift)
HPB_KERNEL(exclusive_scan_int, int* data, int count)
HPB_KERNEL(embedding_sort_scatter, int* keys_out, int* vals_out, const int* keys_in, const int* vals_in, const int* offsets, int M, int shift)
HPB_KERNEL(embedding_backward_segments, float* dC, const float* dembcat, const int* sorted_ids, const int* sorted_rows, int M, int E)

// ---- batchnorm.cu (act: 0 identity, 1 tanh, 2 relu, 3 sigmoid; biased: 0 Bessel, 1 over n)
HPB_KERNEL(batchnorm_forward, float* x, const float* gain, const float* bias, float* mean, float* var, float* var_inv, float* raw, float* y, float* running_mean, float* running_var, int n, int F, float eps, float momentum, int act, int biased, const float* in_bias)
HPB_KERNEL(batchnorm_finish_mean, const float* partial, int chunks, int n, int F, float* mean)
HPB_KERNEL(batchnorm_finish_var, const float* partial, int chunks, int n, int F, float eps, float momentum, int biased, const float* mean, float* var, float* var_inv, float* running_mean, float* running_var)
HPB_KERNEL(batchnorm_normalize, const float* x, const float* mean, const float* var_inv, const float* gain, const float* bias, float* raw, float* y, int n, int F, int act)
HPB_KERNEL(batchnorm_backward, const float* dy, const float* y, const float* raw, const float* gain, const float* var_inv, float* dx, float* dgain, float* dbias, float* dprev_bias, int n, int F, int act, int biased)
HPB_KERNEL(batchnorm_backward_partials, const float* dy, const float* y, const float* raw, int n, int F, int chunk_rows, int act, float* partial_d, float* partial_dr)
HPB_KERNEL(batchnorm_backward_dx, const float* dy, const float* y, const float* raw, const float* gain, const float* var_inv, const float* sum_d, const float* sum_dr, float* dx, int n, int F, int act, int biased)
HPB_KERNEL(batchnorm_inference, const float* x, const float* mean, const float* var, const float* gain, const float* bias, float* y, int n, int F, float eps, int act)
HPB_KERNEL(batchnorm_calib_accumulate, const float* hprebn, int n, int H, const float* center, double* sum, double* sumsq)

// ---- cross_entropy.cu (losses; kind: 1 mse, 2 bce_with_logits, 3 mean)
HPB_KERNEL(cross_entropy_warp, const float* logits, const int* Yb, float* dlogits, float* losses, int n, int V)
HPB_KERNEL(cross_entropy_block, const float* logits, const int* Yb, float* dlogits, float* losses, int n, int V)
HPB_KERNEL(cross_entropy_bias_loss, float* logits, const float* bias, const int* Yb, float* dlogits, float* losses, float* db, float* ring, hpb_step* step, int n, int V)
HPB_KERNEL(sum_partials, const float* x, int count, int chunk, int square, double* partial)
HPB_KERNEL(sum_finish, const double* partial, int count, double scale, float* out, hpb_step* step, int accumulate)
HPB_KERNEL(regression_loss, const float* z, const float* t, float* dz, float* dt, int count, int kind, float scale, int chunk, double* partial)

// ---- linear.cu
HPB_KERNEL(bias_add, float* y, const float* b, int rows, int cols)
HPB_KERNEL(column_partial_sum, const float* x, const float* center, int square, int rows, int cols, int chunk_rows, float* partial)
HPB_KERNEL(column_finish_sum, const float* partial, int chunks, int cols, float* out)
HPB_KERNEL(axpy, float* y, const float* x, float a, int count)

// ---- optimizer.cu (the per-step scalars: step_state.h)
HPB_KERNEL(step_begin, hpb_step* step, const unsigned* set_x, const unsigned* set_y, int count, int xw, int yw, unsigned* x, unsigned* y, int n, const float* table, int e, float* gathered)
HPB_KERNEL(sgd_update, float* params, const float* grads, const hpb_step* step, int count)
HPB_KERNEL(sgd_momentum_update, float* p, const float* g, float* v, int count, const hpb_step* step, float momentum, float weight_decay)
HPB_KERNEL(adamw_update, float* p, const float* g, float* m, float* v, int count, const hpb_step* step, float weight_decay, float beta1, float beta2, float a1, float a2, float eps)

// ---- activation.cu
HPB_KERNEL(activation_forward, float* x, float* y, int count, int act, const float* bias, int cols)
HPB_KERNEL(activation_backward, const float* y, const float* dy, float* dx, int count, int act)
HPB_KERNEL(activation_backward_column_sum, const float* y, const float* dy, float* dx, int act, int rows, int cols, int chunk_rows, float* partial)

// ---- layernorm.cu
HPB_KERNEL(layernorm_forward, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n, int F, float eps)
HPB_KERNEL(layernorm_backward, const float* dy, const float* x, const float* w, const float* mean, const float* rstd, float* dx, int n, int F)
HPB_KERNEL(layernorm_param_partials, const float* dy, const float* x, const float* mean, const float* rstd, int n, int F, int chunk_rows, float* partial_dw, float* partial_db)

// ---- dropout.cu (mask: philox.cuh)
HPB_KERNEL(dropout_forward, const float* x, float* y, int count, unsigned seed, unsigned layer, const hpb_step* step, unsigned threshold, float scale)
HPB_KERNEL(dropout_backward, const float* dy, float* dx, int count, unsigned seed, unsigned layer, const hpb_step* step, unsigned threshold, float scale)

// ---- atomic_chain.cu
HPB_KERNEL(chain_logit_maxes, const float* logits, float* logit_maxes, int n, int V)
HPB_KERNEL(chain_norm_logits, const float* logits, const float* logit_maxes, float* norm_logits, int n, int V)
HPB_KERNEL(chain_counts, const float* norm_logits, float* counts, int count)
HPB_KERNEL(chain_counts_sum, const float* counts, float* counts_sum, int n, int V)
HPB_KERNEL(chain_counts_sum_inv, const float* counts_sum, float* counts_sum_inv, int n)
HPB_KERNEL(chain_probs, const float* counts, const float* counts_sum_inv, float* probs, int n, int V)
HPB_KERNEL(chain_logprobs, const float* probs, float* logprobs, int count)
HPB_KERNEL(chain_losses, const float* logprobs, const int* Yb, float* losses, int n, int V)
HPB_KERNEL(chain_dlogprobs, float* dlogprobs, const int* Yb, int n, int V)
HPB_KERNEL(chain_dprobs, const float* dlogprobs, const float* probs, float* dprobs, int count)
HPB_KERNEL(chain_dcounts_sum_inv, const float* counts, const float* dprobs, float* dcounts_sum_inv, int n, int V)
HPB_KERNEL(chain_dcounts_sum, const float* counts_sum, const float* dcounts_sum_inv, float* dcounts_sum, int n)
HPB_KERNEL(chain_dcounts, const float* counts_sum_inv, const float* dprobs, const float* dcounts_sum, float* dcounts, int n, int V)
HPB_KERNEL(chain_dnorm_logits, const float* counts, const float* dcounts, float* dnorm_logits, int count)
HPB_KERNEL(chain_dlogit_maxes, const float* dnorm_logits, float* dlogit_maxes, int n, int V)
HPB_KERNEL(chain_dlogits, const float* logits, const float* dnorm_logits, const float* dlogit_maxes, float* dlogits, int n, int V)
HPB_KERNEL(chain_bnmeani, const float* hprebn, float* bnmeani, int n, int H)
HPB_KERNEL(chain_bndiff, const float* hprebn, const float* bnmeani, float* bndiff, int n, int H)
HPB_KERNEL(chain_bndiff2, const float* bndiff, float* bndiff2, int count)
HPB_KERNEL(chain_bnvar, const float* bndiff2, float* bnvar, int n, int H)
HPB_KERNEL(chain_bnvar_inv, const float* bnvar, float* bnvar_inv, int H, float eps)
HPB_KERNEL(chain_bnraw, const float* bndiff, const float* bnvar_inv, float* bnraw, int n, int H)
HPB_KERNEL(chain_hpreact, const float* bngain, const float* bnraw, const float* bnbias, float* hpreact, int n, int H)
HPB_KERNEL(chain_h, const float* hpreact, float* h, int count)
HPB_KERNEL(chain_dhpreact, const float* h, const float* dh, float* dhpreact, int count)
HPB_KERNEL(chain_dbngain, const float* bnraw, const float* dhpreact, float* dbngain, int n, int H)
HPB_KERNEL(chain_dbnraw, const float* bngain, const float* dhpreact, float* dbnraw, int n, int H)
HPB_KERNEL(chain_dbnbias, const float* dhpreact, float* dbnbias, int n, int H)
HPB_KERNEL(chain_dbnvar_inv, const float* bndiff, const float* dbnraw, float* dbnvar_inv, int n, int H)
HPB_KERNEL(chain_dbnvar, const float* bnvar, const float* dbnvar_inv, float* dbnvar, int H, float eps)
HPB_KERNEL(chain_dbndiff2, const float* dbnvar, float* dbndiff2, int n, int H)
HPB_KERNEL(chain_dbndiff, const float* bnvar_inv, const float* dbnraw, const float* bndiff, const float* dbndiff2, float* dbndiff, int n, int H)
HPB_KERNEL(chain_dbnmeani, const float* dbndiff, float* dbnmeani, int n, int H)
HPB_KERNEL(chain_dhprebn, const float* dbndiff, const float* dbnmeani, float* dhprebn, int n, int H)
