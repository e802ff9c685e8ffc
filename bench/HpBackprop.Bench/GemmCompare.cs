namespace HpBackprop.Bench;
public static class GemmCompare { public static int Run(string[] args) => 0; }
