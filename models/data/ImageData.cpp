#include "models/data/ImageData.h"

#include "models/train/Config.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace attn::data {
namespace fs = std::filesystem;
using train::UsageError;

static void requireFile(const std::string &path, const std::string &hint) {
  if (!fs::exists(path))
    throw UsageError("missing data file '" + path + "': " + hint);
}

static const char *kPrepareHint =
    "run scripts/prepare-data.sh BUILD_DIR (the build does it; it needs the Debian packages "
    "from scripts/install-deps.sh), or point --data-dir at a prepared data folder";

ImageSplits loadFashionMnist(const std::string &dataRoot) {
  std::string dir = dataRoot + "/fashion-mnist";
  for (const char *name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    requireFile(dir + "/" + name, kPrepareHint);
  auto toSet = [](torch::data::datasets::MNIST &&mnist) {
    ImageSet set;
    // The MNIST reader already scales to [0, 1].
    set.images = mnist.images().to(torch::kFloat32).contiguous();
    set.labels = mnist.targets().to(torch::kInt64);
    set.numClasses = 10;
    set.classNames = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return set;
  };
  ImageSplits splits;
  splits.train = toSet(torch::data::datasets::MNIST(dir, torch::data::datasets::MNIST::Mode::kTrain));
  splits.test = toSet(torch::data::datasets::MNIST(dir, torch::data::datasets::MNIST::Mode::kTest));
  return splits;
}

ImageSplits loadDigits(const std::string &dataRoot) {
  std::string path = dataRoot + "/digits/digits.csv";
  requireFile(path, kPrepareHint);
  std::ifstream in(path);
  std::vector<float> pixels;
  std::vector<int64_t> labels;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    std::stringstream fields(line);
    std::string field;
    std::vector<float> row;
    while (std::getline(fields, field, ','))
      row.push_back(std::stof(field));
    if (row.size() != 65)
      throw UsageError(path + ": expected 64 pixels and a label per row, got " +
                       std::to_string(row.size()) + " fields");
    pixels.insert(pixels.end(), row.begin(), row.begin() + 64);
    labels.push_back(int64_t(row[64]));
  }
  int64_t n = int64_t(labels.size());
  auto images = torch::tensor(pixels).view({n, 1, 8, 8}) / 16.0;
  auto targets = torch::tensor(labels, torch::kInt64);
  // A fixed split, independent of the run's seed, so test accuracy is comparable across runs.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto order = torch::randperm(n, generator, torch::kInt64);
  int64_t testCount = 297;
  ImageSplits splits;
  auto trainIdx = order.slice(0, 0, n - testCount), testIdx = order.slice(0, n - testCount);
  splits.train = {images.index_select(0, trainIdx), targets.index_select(0, trainIdx), 10, {}};
  splits.test = {images.index_select(0, testIdx), targets.index_select(0, testIdx), 10, {}};
  for (auto *set : {&splits.train, &splits.test})
    for (int digit = 0; digit < 10; ++digit)
      set->classNames.push_back(std::to_string(digit));
  return splits;
}

namespace {

struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void onJpegError(j_common_ptr info) {
  auto *manager = reinterpret_cast<JpegErrorManager *>(info->err);
  (*info->err->format_message)(info, manager->message);
  std::longjmp(manager->jump, 1);
}

torch::Tensor decodeJpeg(const std::string &path) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (!file)
    throw UsageError("cannot open image '" + path + "'");
  jpeg_decompress_struct info;
  JpegErrorManager error;
  info.err = jpeg_std_error(&error.base);
  error.base.error_exit = onJpegError;
  torch::Tensor pixels;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&info);
    std::fclose(file);
    throw UsageError("cannot decode JPEG '" + path + "': " + error.message);
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  if (info.jpeg_color_space != JCS_GRAYSCALE)
    info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  int64_t height = info.output_height, width = info.output_width, channels = info.output_components;
  pixels = torch::empty({height, width, channels}, torch::kUInt8);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = pixels.data_ptr<uint8_t>() + int64_t(info.output_scanline) * width * channels;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  std::fclose(file);
  return pixels.permute({2, 0, 1}).contiguous();
}

torch::Tensor decodePng(const std::string &path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    throw UsageError("cannot decode PNG '" + path + "': " + image.message);
  bool gray = (image.format & PNG_FORMAT_FLAG_COLOR) == 0;
  image.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  int64_t channels = gray ? 1 : 3;
  auto pixels = torch::empty({int64_t(image.height), int64_t(image.width), channels}, torch::kUInt8);
  if (!png_image_finish_read(&image, nullptr, pixels.data_ptr<uint8_t>(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    throw UsageError("cannot decode PNG '" + path + "': " + message);
  }
  return pixels.permute({2, 0, 1}).contiguous();
}

std::string lowerExtension(const fs::path &path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext;
}

ImageSet loadFolderSplit(const std::string &dir, const std::vector<std::string> &classes,
                         int64_t size, int64_t channels) {
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t label = 0; label < classes.size(); ++label) {
    std::vector<fs::path> files;
    fs::path classDir = fs::path(dir) / classes[label];
    if (!fs::is_directory(classDir))
      continue;
    for (const auto &entry : fs::directory_iterator(classDir)) {
      auto ext = lowerExtension(entry.path());
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg")
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end()); // a stable order, whatever the file system's
    for (const auto &file : files) {
      auto image = decodeImage(file.string()).to(torch::kFloat32).div(255.0);
      if (image.size(0) != channels)
        image = channels == 1 ? image.mean(0, true) : image.expand({3, -1, -1});
      image = torch::nn::functional::interpolate(
          image.unsqueeze(0), torch::nn::functional::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{size, size})
                                  .mode(torch::kBilinear)
                                  .align_corners(false));
      images.push_back(image.squeeze(0).clamp(0, 1));
      labels.push_back(int64_t(label));
    }
  }
  if (images.empty())
    throw UsageError("no PNG/JPEG images under '" + dir + "/<class>/'");
  return {torch::stack(images), torch::tensor(labels, torch::kInt64), int64_t(classes.size()), classes};
}

} // namespace

torch::Tensor decodeImage(const std::string &path) {
  auto ext = lowerExtension(path);
  if (ext == ".png")
    return decodePng(path);
  if (ext == ".jpg" || ext == ".jpeg")
    return decodeJpeg(path);
  throw UsageError("unsupported image type '" + path + "' (PNG or JPEG)");
}

ImageSplits loadImageFolder(const std::string &root, int64_t size, int64_t channels) {
  if (channels != 1 && channels != 3)
    throw UsageError("--channels must be 1 or 3");
  for (const char *split : {"train", "test"})
    if (!fs::is_directory(root + "/" + split))
      throw UsageError("image folder '" + root + "' needs train/<class>/ and test/<class>/ folders");
  std::vector<std::string> classes;
  for (const auto &entry : fs::directory_iterator(root + "/train"))
    if (entry.is_directory())
      classes.push_back(entry.path().filename().string());
  std::sort(classes.begin(), classes.end());
  ImageSplits splits;
  splits.train = loadFolderSplit(root + "/train", classes, size, channels);
  splits.test = loadFolderSplit(root + "/test", classes, size, channels);
  return splits;
}

Normalisation normalisationOf(const ImageSet &train) {
  auto mean = train.images.mean({0, 2, 3}, true);
  auto std = train.images.std({0, 2, 3}, true, true).clamp_min(1e-3);
  return {mean, std};
}

} // namespace attn::data
