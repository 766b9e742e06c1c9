// Image classification data held in memory as one float tensor: Fashion-MNIST (idx files
// from the dataset-fashion-mnist package), the 8×8 digits (sklearn's digits.csv.gz) and user
// folders of PNG/JPEG files (root/<class>/<file>).
#ifndef MODELS_DATA_IMAGEDATA_H
#define MODELS_DATA_IMAGEDATA_H

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attn::data {

struct ImageSet {
  torch::Tensor images; ///< [N, C, H, W] float32 in [0, 1]
  torch::Tensor labels; ///< [N] int64
  int64_t numClasses = 0;
  std::vector<std::string> classNames;
  int64_t size() const { return images.size(0); }
};

struct ImageSplits {
  ImageSet train, test;
};

/// `dataRoot`/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte (gunzipped).
ImageSplits loadFashionMnist(const std::string &dataRoot);
/// `dataRoot`/digits/digits.csv.gz rows of 64 pixels (0..16) and a label; the last 297 of
/// the 1797 images (a fixed, seeded shuffle) are the test split.
ImageSplits loadDigits(const std::string &dataRoot);
/// `root`/train/<class>/*.{png,jpg,jpeg} and `root`/test/<class>/...; images are decoded,
/// converted to `channels` (1 or 3) and resized to size × size.
ImageSplits loadImageFolder(const std::string &root, int64_t size, int64_t channels);
/// Decodes one PNG or JPEG file to [C, H, W] uint8 (C = 1 or 3).
torch::Tensor decodeImage(const std::string &path);

/// Per-channel mean/std normalisation computed on the training split.
struct Normalisation {
  torch::Tensor mean, std; ///< [1, C, 1, 1]
  torch::Tensor apply(const torch::Tensor &images) const { return (images - mean) / std; }
};
Normalisation normalisationOf(const ImageSet &train);

} // namespace attn::data

#endif // MODELS_DATA_IMAGEDATA_H
