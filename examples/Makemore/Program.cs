// makemore from C#: train the character-level MLP on a word list, save it, load it back, sample.
//
//   dotnet run -- [WORDS.txt] [--steps N] [--device cpu|cuda|emulator]
//
// --device cuda trains on an NVIDIA GPU (the HpBackprop.Cuda package); --device emulator runs
// the same CUDA kernels on the CPU, slowly (linux-x64; meant for tests, use few steps).
//
// WORDS.txt holds one word a line; makemore's names.txt (32,033 names, in the karpathy/makemore
// repository on GitHub) is the usual one. Without a file a few names below stand in.
using HpBackprop.Cuda;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Training;

int steps = 20_000;
string? path = null;
string device = "cpu";
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--steps" && i + 1 < args.Length) steps = int.Parse(args[++i]);
    else if (args[i] == "--device" && i + 1 < args.Length) device = args[++i];
    else path = args[i];
}

Corpus corpus = path != null
    ? Corpus.Load(path)
    : Corpus.FromLines(["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
                        "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
                        "liam", "noah", "oliver", "elijah", "james", "william", "benjamin", "lucas", "henry", "theodore"],
                       "a few names");
const int blockSize = 3;                                   // characters of context
var split = DataSplit.Create(corpus, blockSize);            // 80/10/10, shuffled with a fixed seed
int V = split.Vocabulary.Size;                              // the boundary '.' and the characters
Console.WriteLine($"{corpus.Source}: {corpus.Words.Count} words, vocabulary of {V}");

// embedding → flatten → linear → batch norm → tanh → linear, softmax cross-entropy
var stack = Sequential.Parse($"embedding:{V}x10,flatten,linear:{blockSize * 10}x200,batchnorm:200,tanh,linear:200x{V}");
var options = new NetworkOptions
{
    BatchSize = 32,
    Loss = LossKind.CrossEntropy,
    Optimizer = new Sgd { LearningRate = 0.1f },
    Schedule = new StepSchedule(AtStep: steps / 2, Factor: 0.1f),   // lr 0.1, then 0.01
};
var train = ExampleSet.FromWords(split.Train);

// the same network on every device: the CPU, an NVIDIA GPU, or the GPU's kernels emulated on the CPU
using Network net = device switch
{
    "cuda" => CudaNetwork.OnDevice(stack, options),
    "emulator" => CudaNetwork.OnEmulator(stack, options),
    _ => Network.Create(stack, options),
};
net.Initialize(seed: 2147483647);
float[] losses = net.Fit(train, steps);
net.Calibrate(train);                                       // batch-norm statistics over the whole training split
Console.WriteLine($"trained {steps} steps on {net.Device}: train loss {net.Evaluate(train):F4}, dev loss {net.Evaluate(ExampleSet.FromWords(split.Dev)):F4}");

string file = Path.Combine(Path.GetTempPath(), "makemore-example.safetensors");
StackCheckpoint.Save(file, net, split.Vocabulary);          // loads into torch.nn.Sequential as it is
LoadedModel loaded = StackCheckpoint.Load(file);
using Network again = loaded.Network;
Console.WriteLine($"saved and loaded {file}: dev loss {again.Evaluate(ExampleSet.FromWords(split.Dev)):F4}");

var words = new Sampler(again, loaded.Vocabulary!).Sample(count: 10, seed: 1);
Console.WriteLine("samples: " + string.Join(" ", words));
File.Delete(file);
