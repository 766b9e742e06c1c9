// Everything in models/: σReparam layers, compiled-attention layers, ViT, the speech
// transformer and checkpoints.
#ifndef MODELS_MODELS_H
#define MODELS_MODELS_H

#include "models/Attention.h"
#include "models/CharacterVocabulary.h"
#include "models/Checkpoint.h"
#include "models/LogMel.h"
#include "models/PatchEmbedding.h"
#include "models/Projection.h"
#include "models/SigmaReparam.h"
#include "models/SpeechTransformer.h"
#include "models/TransformerBlock.h"
#include "models/VisionTransformer.h"

#endif // MODELS_MODELS_H
