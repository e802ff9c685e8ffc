namespace HpBackprop.Bench;
public static class FusedCompare { public static int Run(string[] args) => 0; }
