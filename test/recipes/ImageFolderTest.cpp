// User image folders: PNG and JPEG files written here with libpng/libjpeg are decoded, converted
// to the requested channels, resized and labelled by their class folder.
#include "models/data/ImageData.h"
#include "models/train/Config.h"

#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <cstdio>
#include <filesystem>

namespace {
namespace fs = std::filesystem;

// [H, W, 3] uint8 gradient whose red channel encodes `seed`.
std::vector<uint8_t> pattern(int height, int width, int seed) {
  std::vector<uint8_t> rgb(size_t(height * width * 3));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t *p = &rgb[size_t((y * width + x) * 3)];
      p[0] = uint8_t(seed * 40);
      p[1] = uint8_t(x * 255 / (width - 1));
      p[2] = uint8_t(y * 255 / (height - 1));
    }
  return rgb;
}

void writePng(const std::string &path, int height, int width, int seed) {
  auto rgb = pattern(height, width, seed);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = uint32_t(width);
  image.height = uint32_t(height);
  image.format = PNG_FORMAT_RGB;
  ASSERT_TRUE(png_image_write_to_file(&image, path.c_str(), 0, rgb.data(), 0, nullptr)) << image.message;
}

void writeJpeg(const std::string &path, int height, int width, int seed) {
  auto rgb = pattern(height, width, seed);
  jpeg_compress_struct info;
  jpeg_error_mgr error;
  info.err = jpeg_std_error(&error);
  jpeg_create_compress(&info);
  FILE *file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  jpeg_stdio_dest(&info, file);
  info.image_width = JDIMENSION(width);
  info.image_height = JDIMENSION(height);
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 95, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = &rgb[size_t(info.next_scanline) * size_t(width) * 3];
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

TEST(ImageFolder, DecodesPngAndJpegAndLabelsByFolder) {
  auto root = fs::temp_directory_path() / "attn-image-folder-test";
  fs::remove_all(root);
  for (const char *split : {"train", "test"})
    for (const char *cls : {"cat", "dog"})
      fs::create_directories(root / split / cls);
  writePng((root / "train/cat/a.png").string(), 12, 10, 1);
  writeJpeg((root / "train/cat/b.jpg").string(), 16, 16, 2);
  writePng((root / "train/dog/c.png").string(), 8, 8, 3);
  writeJpeg((root / "test/dog/d.jpeg").string(), 20, 12, 4);

  auto png = attn::data::decodeImage((root / "train/cat/a.png").string());
  ASSERT_EQ(png.sizes(), (std::vector<int64_t>{3, 12, 10}));
  EXPECT_EQ(png[0][5][5].item<int64_t>(), 40);  // red = seed · 40, exact in PNG
  EXPECT_EQ(png[1][0][9].item<int64_t>(), 255); // green ramps over x
  auto jpeg = attn::data::decodeImage((root / "train/cat/b.jpg").string());
  ASSERT_EQ(jpeg.sizes(), (std::vector<int64_t>{3, 16, 16}));
  EXPECT_NEAR(jpeg[0][8][8].item<double>(), 80, 6); // lossy, but close

  auto splits = attn::data::loadImageFolder(root.string(), 8, 1);
  EXPECT_EQ(splits.train.images.sizes(), (std::vector<int64_t>{3, 1, 8, 8}));
  EXPECT_EQ(splits.test.images.sizes(), (std::vector<int64_t>{1, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(splits.train.labels, torch::tensor({0, 0, 1}, torch::kInt64)));
  EXPECT_EQ(splits.test.labels[0].item<int64_t>(), 1);
  EXPECT_EQ(splits.train.classNames, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_GE(splits.train.images.min().item<double>(), 0.0);
  EXPECT_LE(splits.train.images.max().item<double>(), 1.0);

  EXPECT_THROW(attn::data::loadImageFolder((root / "train").string(), 8, 1), attn::train::UsageError);
  { std::FILE *f = std::fopen((root / "train/cat/bad.png").c_str(), "w"); std::fputs("not a png", f); std::fclose(f); }
  EXPECT_THROW(attn::data::loadImageFolder(root.string(), 8, 3), attn::train::UsageError);
}

} // namespace
