// Calibration of a classifier's predicted probabilities: expected calibration error (ECE) and
// the Brier score, the two figures "Bootstrap Your Own Variance" (Turishcheva et al. 2023)
// reports for BYOV against BYOL.
#ifndef MODELS_RECIPES_CALIBRATION_H
#define MODELS_RECIPES_CALIBRATION_H

#include <torch/torch.h>

namespace attn::recipes {

/// ECE (Guo et al. 2017): the predictions are binned by confidence (the top probability) into
/// `bins` equal-width bins of (0, 1]; ECE = Σ_b (n_b / N)·|accuracy_b − mean confidence_b|.
/// probabilities [N, C] (rows sum to 1), labels [N] (int64). In [0, 1].
double expectedCalibrationError(const torch::Tensor &probabilities, const torch::Tensor &labels,
                                int64_t bins = 15);

/// Brier score (multi-class): mean over samples of Σ_c (p_c − 1[c = label])². In [0, 2].
double brierScore(const torch::Tensor &probabilities, const torch::Tensor &labels);

} // namespace attn::recipes

#endif // MODELS_RECIPES_CALIBRATION_H
